"""The documentation builds offline with warnings as errors, and the wheel holds the package only.

``.ci/run`` builds the docs with every example executed; the build here skips running the examples
(``tests/test_examples.py`` runs each of them) and checks everything else: autodoc, numpydoc, the
gallery pages, the causal graphs and tables computed at build time, and maths served without a CDN.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here builds the docs or the wheel

ROOT = Path(__file__).resolve().parents[1]
DOCS_NEEDS = ["sphinx", "numpydoc", "sphinx_gallery", "sphinx-mathjax-offline", "matplotlib"]
MISSING = [name for name in DOCS_NEEDS if importlib.util.find_spec(name) is None]
# A script or a style sheet loaded from anywhere but the built pages: a CDN, a protocol-relative URL.
REMOTE = re.compile(r"<script[^>]*\bsrc=[\"']?(?:https?:)?//"
                    r"|<link[^>]*\bstylesheet\b[^>]*\bhref=[\"']?(?:https?:)?//"
                    r"|<link[^>]*\bhref=[\"']?(?:https?:)?//[^>]*\bstylesheet\b", re.IGNORECASE)
BUILD_OUTPUTS = ["_build", "auto_examples", "_generated", "sg_execution_times.rst", "__pycache__"]


def env_with_checkout():
    """The environment of a child process that imports this checkout's package."""
    return {**os.environ, "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """Build the docs from a copy of docs/ and examples/ (the build writes into its source folder)."""
    if MISSING:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(MISSING)}): "
                    "pip install -e '.[docs]'")
    source = tmp_path_factory.mktemp("docs-source")
    shutil.copytree(ROOT / "docs", source / "docs", ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
    # the figures examples/ holds after an in-place build are outputs too
    shutil.copytree(ROOT / "examples", source / "examples",
                    ignore=shutil.ignore_patterns("*.png", "__pycache__"))
    output = source / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-D", "plot_gallery=0",
         str(source / "docs"), str(output)],
        capture_output=True, text=True, env=env_with_checkout(),
    )
    assert done.returncode == 0, f"sphinx -W failed:\n{done.stdout}\n{done.stderr}"
    return output


def test_the_docs_build_with_warnings_as_errors(html):
    pages = {path.relative_to(html).as_posix() for path in html.rglob("*.html")}
    for page in ["index.html", "api.html", "glossary.html", "guide/ood.html", "guide/causal_fixes.html",
                 "guide/choosing.html", "guide/uncertainty_trust.html", "auto_examples/index.html"]:
        assert page in pages
    examples = sorted(path.stem for path in (ROOT / "examples").glob("*.py"))
    assert examples, "no examples found"
    for name in examples:
        assert f"auto_examples/{name}.html" in pages


def test_no_page_loads_a_script_or_style_from_the_network(html):
    remote = {path.relative_to(html).as_posix(): REMOTE.findall(path.read_text(errors="replace"))
              for path in html.rglob("*.html")}
    assert {page: found for page, found in remote.items() if found} == {}


def test_maths_is_served_by_the_pages_themselves(html):
    page = (html / "guide" / "causal_fixes.html").read_text()
    assert re.search(r"<script[^>]*src=\"\.\./_static/mathjax/tex-chtml\.js", page)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    assert "\\max_{A^\\top A = I}" in page  # the maths itself, for MathJax to render


def test_the_guide_shows_figures_and_tables_computed_at_build_time(html):
    graphs = [html / "_images" / f"causal_graph_{name}.png" for name in ("icm", "front_door")]
    assert all(path.stat().st_size > 10_000 for path in graphs)
    ood = (html / "guide" / "ood.html").read_text()
    assert "(shifted)" in ood and "oracle (true invariant latents)" in ood
    assert "image pairs (view groups)" in (html / "projection.html").read_text()


def test_inherited_metadata_request_setters_are_left_out_of_the_api(html):
    api = (html / "api.html").read_text()
    documented = set(re.findall(r'id="(clip_invariance\.[\w.]+)"', api))
    assert "clip_invariance.InvariantProjector.fit" in documented
    assert "clip_invariance.FrontDoorEnsembleClassifier.predict_uncertainty" in documented
    assert [name for name in documented if re.search(r"\.set_\w+_request$", name)] == []


@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs the 'build' package")
def test_the_wheel_holds_the_package_and_nothing_else(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "_build", ".pytest_cache", ".venv", ".cache"))
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("clip_invariance-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    package = {name for name in names if not name.startswith("clip_invariance-")}
    assert all(name.startswith("clip_invariance/") for name in package), sorted(package)
    datasets = {Path(name).name for name in package if name.startswith("clip_invariance/datasets/")}
    expected = {path.name for path in (ROOT / "clip_invariance" / "datasets").glob("*.py")}
    assert datasets == expected
    assert {Path(name).name for name in package} >= {"__init__.py", "__main__.py", "cli.py", "_projector.py"}
    folders = {Path(name).parent.name for name in package}
    assert folders >= {"embedding", "invariance", "front_door", "evaluation", "datasets", "_utils"}
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"clip-invariance = clip_invariance.cli:main" in entry_points
