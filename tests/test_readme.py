"""The README: its Python runs as written, its table is what the command prints, its links hold."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
# Blocks that need user data (image paths, new prompts) or the earlier blocks' names.
SELF_CONTAINED = [block for block in BLOCKS if "paths" not in block and "new_prompt" not in block]


def readme_table_module():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "docs" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_tables(text):
    """Every Markdown table of ``text``: runs of consecutive lines starting with ``|``."""
    return [table.strip() for table in re.findall(r"(?:^\|.*\n?)+", text, flags=re.M)]


def test_there_is_a_self_contained_example():
    assert SELF_CONTAINED


@pytest.mark.slow
@pytest.mark.parametrize("block", SELF_CONTAINED, ids=lambda b: b.splitlines()[-1][:40])
def test_readme_block_runs(block):
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)


@pytest.mark.slow
def test_the_result_table_is_what_evaluate_prints_now():
    pytest.importorskip("pandas")  # clip-invariance evaluate needs the evaluate extra
    table = readme_table_module().readme_table()
    assert markdown_tables(README) == [table]


def test_the_readme_shows_the_command_that_made_the_table():
    module = readme_table_module()
    shown = " ".join(["clip-invariance"] + module.command("synthetic-store", "results")[3:])
    assert any(block.strip() == shown for block in BASH)


def test_the_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    (test_command,) = [block.strip() for block in BASH if "pytest" in block]
    install, run = test_command.rsplit(" && ", 1)
    assert install in ci and run in ci


def test_relative_links_point_at_files_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert relative
    assert [link for link in relative if not (ROOT / link).exists()] == []


# ---------------------------------------------------------------------------------------------------------
# The README's links go to files of the repository that a code host renders (issue 22): the pages of the
# documentation as sources, whose figures and tables must then be committed files, not outputs of the
# docs build (docs/_generated is ignored, so a code host has none of it).

LINKS = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
PAGES = sorted({link for link in LINKS if link.endswith(".rst")})
FIGURE = re.compile(r"^\s*\.\. (?:figure|image)::\s*(\S+)", flags=re.M)
TABLE_FILE = re.compile(r"^\s*\.\. csv-table::.*\n(?:[ \t]+\S.*\n)*?[ \t]+:file:\s*(\S+)", flags=re.M)
INCLUDE = re.compile(r"^\s*\.\. (?:literal)?include::\s*(\S+)", flags=re.M)
RELATIVE_LINK = re.compile(r"`[^`<]*<([^>`]+)>`__?")


def tracked(path):
    """Whether git tracks ``path`` (None outside a git checkout, where it cannot be told)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def committed(path):
    """``path`` (a file of the repository) exists, is not an output of the docs build, and git has it."""
    relative = path.resolve().relative_to(ROOT).as_posix()
    return path.is_file() and "_generated" not in relative.split("/") and tracked(path) is not False


def page_files(page, pattern):
    """The files a page names with ``pattern``, as paths of the repository."""
    source = ROOT / page
    return [(source.parent / found).resolve() for found in pattern.findall(source.read_text())]


def test_the_readme_links_to_pages_and_no_link_goes_to_the_unpublished_site():
    assert "docs/guide/ood.rst" in PAGES and "docs/evaluation.rst" in PAGES
    assert "github.io" not in README and "placeholder" not in README
    assert [link for link in LINKS if re.match(r"[a-z]+:", link)] == []  # every link is relative


@pytest.mark.parametrize("page", PAGES)
def test_the_figures_of_a_linked_page_are_committed(page):
    figures = page_files(page, FIGURE)
    assert [f.relative_to(ROOT).as_posix() for f in figures if not committed(f)] == []


@pytest.mark.parametrize("page", PAGES)
def test_the_tables_of_a_linked_page_are_committed_and_linked(page):
    source = ROOT / page
    text = source.read_text()
    tables = page_files(page, TABLE_FILE) + page_files(page, INCLUDE)
    assert [t.relative_to(ROOT).as_posix() for t in tables if not committed(t)] == []
    # a code host's renderer shows no :file: table: the page links each CSV, so that a reader can open it
    linked = {(source.parent / link).resolve() for link in RELATIVE_LINK.findall(text)}
    unlinked = {(page, table.relative_to(ROOT).as_posix())
                for table in page_files(page, TABLE_FILE) if table not in linked}
    assert unlinked == set()


@pytest.mark.parametrize("page", PAGES)
def test_the_relative_links_of_a_linked_page_resolve(page):
    source = ROOT / page
    links = [link for link in RELATIVE_LINK.findall(source.read_text()) if not re.match(r"[a-z]+:", link)]
    assert [link for link in links if not (source.parent / link).exists()] == []


def committed_figures():
    return sorted((ROOT / "docs" / "_static" / "figures").glob("*.png"))


def committed_figure_module():
    spec = importlib.util.spec_from_file_location("committed_figure", ROOT / "docs" / "committed_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_figures_are_the_ones_the_pages_show():
    shown = {f for page in (ROOT / "docs").rglob("*.rst") if "_build" not in page.parts
             for f in page_files(page.relative_to(ROOT), FIGURE)}
    assert {f.name for f in committed_figures()} >= {"causal_graph_icm.png", "causal_graph_front_door.png",
                                                     "landing_demo.png", "ablation.png", "scaling.png"}
    assert [f.name for f in committed_figures() if f.resolve() not in shown] == []  # none left over


@pytest.mark.parametrize("figure", committed_figures(), ids=lambda path: path.name)
def test_a_committed_figure_is_drawn_from_its_inputs_as_they_are_now(figure):
    pytest.importorskip("PIL")
    module = committed_figure_module()
    assert module.recorded_inputs(figure), "drawn without docs/committed_figure.py's save()"
    stale = module.stale_inputs(figure)
    assert stale == [], f"{figure.name} is older than {stale}: rerun the script that draws it"
