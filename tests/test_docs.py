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
DOCS_NEEDS = ["sphinx", "numpydoc", "sphinx_gallery", "sphinx-mathjax-offline", "pydata_sphinx_theme",
              "matplotlib"]
MISSING = [name for name in DOCS_NEEDS if importlib.util.find_spec(name) is None]
# A script or a style sheet loaded from anywhere but the built pages: a CDN, a protocol-relative URL.
REMOTE = re.compile(r"<script[^>]*\bsrc=[\"']?(?:https?:)?//"
                    r"|<link[^>]*\bstylesheet\b[^>]*\bhref=[\"']?(?:https?:)?//"
                    r"|<link[^>]*\bhref=[\"']?(?:https?:)?//[^>]*\bstylesheet\b", re.IGNORECASE)
BUILD_OUTPUTS = ["_build", "auto_examples", "_generated", "sg_execution_times.rst", "__pycache__", "api"]


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
                 "guide/choosing.html", "guide/uncertainty_trust.html", "auto_examples/index.html",
                 "user_guide.html", "citing.html", "performance.html"]:
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


def test_the_guide_shows_the_committed_figures_and_tables(html):
    graphs = [html / "_images" / f"causal_graph_{name}.png" for name in ("icm", "front_door")]
    assert all(path.stat().st_size > 10_000 for path in graphs)
    ood = (html / "guide" / "ood.html").read_text()
    assert "(shifted)" in ood and "oracle (true invariant latents)" in ood
    assert "image pairs (view groups)" in (html / "projection.html").read_text()
    # each table's CSV link, relative so that a code host resolves it too, works in the built site as well
    assert 'href="../tables/demo.csv"' in ood
    assert (html / "tables" / "demo.csv").read_text() == (ROOT / "docs" / "tables" / "demo.csv").read_text()


def test_the_build_writes_nothing_git_would_commit(html):
    """The build (its copy of docs/) changed no committed file and added none git does not ignore, so a
    build in a clean clone leaves ``git status`` clean (examples, which this build does not run, aside)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    source = html.parent / "docs"
    listed = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True)
    committed = [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]
    copied = [name for name in committed if (source.parent / name).is_file()]  # the fixture skips outputs
    changed = [name for name in copied if (source.parent / name).read_bytes() != (ROOT / name).read_bytes()]
    built = {f"docs/{path.relative_to(source).as_posix()}" for path in source.rglob("*") if path.is_file()}
    new = sorted(built - set(committed))
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(new),
                             capture_output=True, text=True).stdout.splitlines()
    assert (changed, sorted(set(new) - set(ignored))) == ([], [])


@pytest.mark.parametrize(("script", "table"), [("demo_table.py", "demo.csv"),
                                               ("projection_table.py", "projection_sources.csv")])
def test_the_committed_tables_are_what_their_scripts_write_now(script, table, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "docs" / script), str(tmp_path / table)],
                          capture_output=True, text=True, env=env_with_checkout())
    assert done.returncode == 0, done.stderr
    committed = (ROOT / "docs" / "tables" / table).read_text()
    assert (tmp_path / table).read_text() == committed, f"rerun python docs/{script} (and commit the table)"


def conf_module():
    spec = importlib.util.spec_from_file_location("docs_conf", ROOT / "docs" / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_its_page_linked_from_the_api_summary(html):
    conf = conf_module()
    api = (html / "api.html").read_text()
    expected = [f"{module}.{name}" for module in conf.public_modules() for name in conf.documented(module)]
    assert "clip_invariance.InvariantProjector" in expected
    assert "clip_invariance.embedding.CLIPEmbedder" not in expected  # one page, under the top-level name
    missing = [name for name in expected if not (html / "api" / f"{name}.html").exists()]
    unlinked = [name for name in expected if f'href="api/{name}.html' not in api]
    assert (missing, unlinked) == ([], [])


def test_api_pages_document_methods_but_not_the_metadata_request_setters(html):
    documented = set()
    for name in ("InvariantProjector", "FrontDoorEnsembleClassifier"):
        page = (html / "api" / f"clip_invariance.{name}.html").read_text()
        documented |= set(re.findall(r'id="(clip_invariance\.[\w.]+)"', page))
    assert "clip_invariance.InvariantProjector.fit" in documented
    assert "clip_invariance.FrontDoorEnsembleClassifier.predict_uncertainty" in documented
    assert [name for name in documented if re.search(r"\.set_\w+_request$", name)] == []


def test_api_pages_show_the_examples_that_use_the_object(html):
    page = (html / "api" / "clip_invariance.InvariantProjector.html").read_text()
    assert "Examples using" in page
    assert 'href="../auto_examples/plot_invariance_spectrum.html' in page


def test_the_theme_shows_the_version_a_footer_and_the_landing_page_essentials(html):
    from clip_invariance import __version__

    index = (html / "index.html").read_text()
    assert "pydata-sphinx-theme" in index or "pydata_sphinx_theme" in index
    assert f"v{__version__}" in index  # in the navigation bar
    footer = index[index.index("<footer"):]
    assert "BSD-3-Clause" in footer and 'href="citing.html"' in footer
    assert "(c). |" not in index
    essentials = ('class="rubric">Install', "evaluate,plots", "make_invariant_embeddings", "landing_demo.png",
                  "Which method when")
    for essential in essentials:
        assert essential in index
    assert (html / "_images" / "landing_demo.png").stat().st_size > 10_000


def test_guide_pages_show_their_figures(html):
    assert "pacs_domain_shift.png" in (html / "guide" / "ood.html").read_text()
    assert "ablation.png" in (html / "guide" / "choosing.html").read_text()
    assert (html / "_images" / "ablation.png").stat().st_size > 10_000
    assert (ROOT / "docs" / "_static" / "pacs_domain_shift.png").stat().st_size < 200_000  # committed


def test_citing_page_gives_bibtex_for_the_package_and_both_papers(html):
    page = (html / "citing.html").read_text()
    for title in ("Learning Invariant Causal Mechanism from Vision-Language Models",
                  "Rethinking Misalignment in Vision-Language Model Adaptation from a Causal Perspective",
                  "@software"):
        assert title in page


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


@pytest.mark.skipif(importlib.util.find_spec("yaml") is None, reason="needs PyYAML")
def test_the_citation_file_matches_the_package():
    import yaml

    from clip_invariance import __version__

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == __version__
    assert citation["license"] == "BSD-3-Clause"
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert 'license = "BSD-3-Clause"' in (ROOT / "pyproject.toml").read_text()
    assert len(citation["references"]) == 2


def test_the_citing_page_gives_the_references_of_the_citation_file():
    yaml = pytest.importorskip("yaml")
    from clip_invariance import __version__

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    page = (ROOT / "docs" / "citing.rst").read_text()
    entries = re.findall(r"^   @\w+\{.*?^   \}", page, flags=re.M | re.S)
    assert len(entries) == 3
    package = next(entry for entry in entries if entry.startswith("   @software"))
    assert f"version = {{{__version__}}}" in package
    assert citation["repository-code"] in package
    for reference in citation["references"]:
        (entry,) = [entry for entry in entries if reference["title"] in entry]
        authors = re.search(r"author\s*=\s*\{(.*?)\},", entry, flags=re.S).group(1)
        expected = " and ".join(f"{a['family-names']}, {a['given-names']}" for a in reference["authors"])
        assert " ".join(authors.split()) == expected
        assert str(reference["year"]) in entry
        if "url" in reference:  # CDC's arXiv page
            assert reference["url"] in entry
    cdc = next(r for r in citation["references"] if r["title"].startswith("Rethinking Misalignment"))
    assert cdc["url"] == "https://arxiv.org/abs/2410.12816"
    assert {"type": "other", "value": "arXiv:2410.12816"}.items() <= cdc["identifiers"][0].items()


def test_the_landing_page_example_runs():
    index = (ROOT / "docs" / "index.rst").read_text()
    block = index.split(".. code-block:: python\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("   "):
            break
        lines.append(line[3:])
    exec(compile("\n".join(lines), "docs/index.rst", "exec"), {})
