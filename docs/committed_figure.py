"""Save a figure of the docs as a committed PNG that records what it was drawn from.

The docs' figures are committed under ``docs/_static/figures/`` so that the pages render on a code host
too (whose reStructuredText renderer runs no script); the docs build reads them and draws nothing. A PNG
is not byte-identical across matplotlib and FreeType versions, so the build cannot redraw it without
dirtying the tree; instead each figure carries, in a PNG text chunk named ``Inputs``, the SHA-256 of every
file it was drawn from (its script and its data), and ``tests/test_readme.py`` checks them against the
files as they are now: a figure whose script or table changed since it was drawn fails until it is
redrawn with its script, e.g. ``python docs/landing_figure.py``.
"""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "_static" / "figures"
KEY = "Inputs"


def digest(path):
    """SHA-256 of a file's bytes, line endings normalised (a checkout on Windows gives the same)."""
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def save(fig, name, inputs, **savefig_kwargs):
    """Save ``fig`` as ``docs/_static/figures/<name>``, recording the digests of ``inputs`` (paths).

    No software version and no date go into the file, so that redrawing with the same matplotlib gives
    the same bytes.
    """
    lines = [f"{Path(path).resolve().relative_to(ROOT).as_posix()} {digest(path)}" for path in inputs]
    FIGURES.mkdir(parents=True, exist_ok=True)
    out = FIGURES / name
    fig.savefig(out, metadata={"Software": None, KEY: "\n".join(lines)}, **savefig_kwargs)
    return out


def recorded_inputs(path):
    """``{repository path: SHA-256}`` of the files a committed figure says it was drawn from."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text.get(KEY, "")
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line)


def stale_inputs(path):
    """The inputs of a committed figure that changed (or vanished) since it was drawn."""
    stale = []
    for name, sha in recorded_inputs(path).items():
        file = ROOT / name
        if not file.exists() or digest(file) != sha:
            stale.append(name)
    return stale
