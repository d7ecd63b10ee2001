"""The package's layout rules, checked on its source.

- Subpackages along the data path hold private modules (``_name.py``) that
  their ``__init__`` re-exports with ``__all__``.
- Private helpers are shared inside a subpackage; across subpackages only the
  names a subpackage's ``__init__`` exports travel, plus the package-wide
  internals of ``clip_invariance._utils`` (which imports no other part).
- torch is imported only where a model runs: the embedder's modules and the
  front door's training and prompt learning; ``import clip_invariance`` stays light.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clip_invariance"
MODULES = sorted(PACKAGE.rglob("*.py"))
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
TORCH_MODULES = {"embedding/_backbone.py", "embedding/_embedder.py", "embedding/_prompts.py",
                 "front_door/_training.py", "front_door/_prompt_learning.py"}


def _module_name(path, root):
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, root=PACKAGE):
    """(module imported from, name) for every ``from ... import name`` of the package, and plain imports."""
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
            for alias in node.names:
                yield source, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def _unit(module):
    """The subpackage of a dotted module name, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _violations(path, root=PACKAGE):
    """Imports of ``path`` that reach into another subpackage's private parts."""
    own = _unit(_module_name(path, root))
    found = []
    for source, name in _imports(path, root):
        parts = source.split(".")
        if parts[0] != "clip_invariance" or len(parts) == 1:
            continue
        if own == "_utils" and parts[1] != "_utils":
            found.append(f"{source}.{name}: _utils imports no other part of the package")
        if parts[1] == own:
            continue
        private_module = any(p.startswith("_") for p in parts[2:]) or (
            parts[1].startswith("_") and parts[1] != "_utils")
        private_name = name is not None and name.startswith("_") and not name.startswith("__")
        if private_module or private_name:
            found.append(f"{source}.{name}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_part_of_another_subpackage_is_imported(path):
    violations = _violations(path)
    assert not violations, f"{path.relative_to(PACKAGE)} imports {violations}"


def test_the_checker_sees_private_imports(tmp_path):
    # The rule above must be able to fail: a planted module with each kind of import.
    root = tmp_path / "clip_invariance"
    for sub in ("datasets", "_utils"):
        (root / sub).mkdir(parents=True)
    fake = root / "datasets" / "_fake.py"
    fake.write_text(
        "from ..front_door._evidence import fuse_scores\n"  # a private module of another subpackage
        "from ..invariance import _helper\n"  # a private name of another subpackage
        "from ._store import _swap_in\n"  # its own subpackage: allowed
        "from .._utils import check_labels\n"  # the package-wide internals: allowed
        "from clip_invariance.views import stack_views\n"  # a public module: allowed
        "from numpy import _private_but_not_ours\n"
    )
    assert _violations(fake, root) == ["clip_invariance.front_door._evidence.fuse_scores",
                                       "clip_invariance.invariance._helper"]
    leaf = root / "_utils" / "_fake.py"
    leaf.write_text("from ..views import stack_views\n")
    assert _violations(leaf, root) == ["clip_invariance.views.stack_views: _utils imports no other part "
                                       "of the package"]


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackages_hold_private_modules_reexported_with_all(subpackage):
    folder = PACKAGE / subpackage
    public = [p.name for p in folder.glob("*.py") if not p.name.startswith("_")]
    assert not public, f"{subpackage}/ has public module files {public}: name them _module.py"
    module = importlib.import_module(f"clip_invariance.{subpackage}")
    assert module.__all__, f"clip_invariance.{subpackage} has an empty __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"clip_invariance.{subpackage}.__all__ lists {missing}, which it does not define"
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_top_level_exports_the_four_estimators_only():
    import clip_invariance

    assert sorted(clip_invariance.__all__) == [
        "CLIPEmbedder", "FrontDoorEnsembleClassifier", "InvariantProjector", "ZeroShotInvariantClassifier",
        "__version__",
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_only_where_a_model_runs(path):
    relative = str(path.relative_to(PACKAGE))
    torch_imports = [source for source, _ in _imports(path) if source.split(".")[0] in ("torch", "open_clip")]
    if relative not in TORCH_MODULES:
        assert not torch_imports, f"{relative} imports {torch_imports}: only {sorted(TORCH_MODULES)} may"


def test_import_stays_light():
    # Every public part, imported at once: none of them pulls a heavy library at import.
    # pandas is not listed: scikit-learn itself imports it when it is installed.
    parts = ", ".join(["clip_invariance", "clip_invariance.cli", "clip_invariance.views",
                       "clip_invariance.zero_shot"] + [f"clip_invariance.{sub}" for sub in SUBPACKAGES])
    code = (
        f"import sys, {parts};"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision', 'PIL', 'matplotlib', 'dask', 'tqdm', "
        "'huggingface_hub') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "clip_invariance", "--version"], capture_output=True,
                         text=True, check=True)
    import clip_invariance

    assert out.stdout.strip() == f"clip-invariance {clip_invariance.__version__}"
