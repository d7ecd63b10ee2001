"""The README's self-contained Python examples run as written."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# Blocks that need user data (image paths, new prompts) or the earlier blocks' names.
SELF_CONTAINED = [block for block in BLOCKS if "paths" not in block and "new_prompt" not in block]


@pytest.mark.parametrize("block", SELF_CONTAINED, ids=lambda b: b.splitlines()[-1][:40])
def test_readme_block_runs(block):
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
