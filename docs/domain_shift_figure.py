"""Draw the user guide's example of a domain shift: one image per class in each PACS domain.

The figure, ``docs/_static/pacs_domain_shift.png``, is committed: it is made from a local copy of
pacs-mini, a 420-image subset of PACS (Li et al., "Deeper, Broader and Artier Domain Generalization",
ICCV 2017) in the layout ``<domain>/<class>/<file>``, which the package's users do not have. PACS is
distributed for research use only; the thumbnails are shown here under that use, to illustrate the
shift. Rerun after changing the folder or the layout::

    python docs/domain_shift_figure.py [PATH/TO/pacs-mini]
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

DOCS = Path(__file__).resolve().parent
DEFAULT_FOLDER = DOCS.parents[1] / "shared" / "data" / "pacs-mini"
DOMAINS = ["photo", "art_painting", "cartoon", "sketch"]
THUMBNAIL = 112  # pixels: small enough for a committed file, large enough to see the style


def main(folder=DEFAULT_FOLDER):
    folder = Path(folder)
    classes = sorted(path.name for path in (folder / DOMAINS[0]).iterdir() if path.is_dir())
    fig, axes = plt.subplots(len(DOMAINS), len(classes), figsize=(1.1 * len(classes), 1.2 * len(DOMAINS)),
                             dpi=100)
    for row, domain in enumerate(DOMAINS):
        for col, name in enumerate(classes):
            first = sorted((folder / domain / name).iterdir())[0]  # a fixed choice: the first file by name
            image = Image.open(first).convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            ax = axes[row, col]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(domain.replace("_", " "), fontsize=9)
    fig.suptitle("The same seven classes in the four PACS domains: the content stays, the style changes",
                 fontsize=9)
    fig.tight_layout(pad=0.3)
    out = DOCS / "_static" / "pacs_domain_shift.png"
    fig.savefig(out)
    plt.close(fig)
    # a 256-colour palette keeps the committed file small
    palette = Image.open(out).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(*sys.argv[1:])
