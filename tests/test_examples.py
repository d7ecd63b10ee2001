"""The gallery's examples: each runs offline to the end, prints what it shows and saves a figure."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# The gallery of issue 13, in the user guide's order.
GALLERY = {
    "plot_pipeline_grid_search",
    "plot_zero_shot",
    "plot_front_door",
    "plot_command_line",
    "plot_ablation",
    "plot_invariance_spectrum",
}


def test_the_gallery_holds_the_six_examples():
    assert {path.stem for path in EXAMPLES} == GALLERY


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_a_gallery_page(script):
    source = script.read_text(encoding="utf-8")
    lines = ast.get_docstring(ast.parse(source), clean=False).strip("\n").splitlines()
    # sphinx-gallery takes the page title from an RST title with === over and under
    assert lines[0] == lines[2] and set(lines[0]) == {"="}, lines[:3]
    assert len(lines[0]) >= len(lines[1].strip()), "the title's rule is shorter than the title"
    assert "# %%" in source
    calls = {
        node.func.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "show" not in calls, "an example saves its figures; plt.show() blocks a build"


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    # The package under test is this checkout's, whatever is installed; the figures go to the cwd.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip(), "an example prints what it shows"
    assert sorted(tmp_path.glob("*.png")), "an example saves at least one figure into the cwd"
