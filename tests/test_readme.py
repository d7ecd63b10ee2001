"""The README: its Python runs as written, its table is what the command prints, its links hold."""

import importlib.util
import re
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
