"""The package's layout rules, checked on its source: one concept per module, no private imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clip_invariance"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path, root):
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path, root=PACKAGE):
    """(module imported from, name) for every ``from clip_invariance... import name``."""
    tree = ast.parse(path.read_text())
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] == "clip_invariance":
                for alias in node.names:
                    yield source, alias.name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_500_lines(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= 500, f"{path.name} has {n_lines} lines: split it by concept"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_imported_from_another_module(path):
    private = [
        f"{source}.{name}"
        for source, name in _imported_names(path)
        if name.startswith("_") and not name.startswith("__")  # dunders such as __version__ are public
    ]
    assert not private, f"{path.name} imports private names {private}"


def test_the_checker_sees_private_imports(tmp_path):
    # The rule above must be able to fail: a planted module with both kinds of import.
    root = tmp_path / "clip_invariance"
    (root / "datasets").mkdir(parents=True)
    fake = root / "datasets" / "fake.py"
    fake.write_text(
        "from ..evidence import _fuse\nfrom clip_invariance.views import stack_views\n"
        "from numpy import _private_but_not_ours\n"
    )
    assert list(_imported_names(fake, root)) == [
        ("clip_invariance.evidence", "_fuse"),
        ("clip_invariance.views", "stack_views"),
    ]


def test_import_stays_light():
    # pandas is not listed: scikit-learn itself imports it when it is installed.
    code = (
        "import sys, clip_invariance, clip_invariance.datasets, clip_invariance.evaluation, "
        "clip_invariance.views, clip_invariance.cli;"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision', 'PIL', 'matplotlib', 'dask') "
        "if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
