"""DomainBed-style image folders: ``<root>/<domain>/<class>/<image file>``."""

import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image_folder(root, domains=None):
    """List the images of a multi-domain dataset laid out as ``<domain>/<class>/<file>``.

    This is the layout of the DomainBed datasets (PACS, VLCS, OfficeHome,
    TerraIncognita, DomainNet). Only paths are returned; decoding is the
    embedder's job.

    Parameters
    ----------
    root : str or path
        Folder holding one sub-folder per domain.
    domains : list of str, default=None
        Domains to load, in this order; ``None`` loads all, sorted by name.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        - ``paths``: ndarray of str, shape (n,), the image files, sorted
          within each domain and class.
        - ``y``: ndarray of int, shape (n,), index into ``target_names``.
        - ``target_names``: list of str, the class names (sorted union over
          the loaded domains, so codes agree across domains).
        - ``environments``: ndarray of str, shape (n,), the domain of each
          image; pass it as ``environments`` to the projector or use it as
          ``groups`` of a leave-one-domain-out split.
        - ``domain_names``: list of str, the loaded domains.

    Raises
    ------
    FileNotFoundError
        If ``root`` or a requested domain does not exist.
    ValueError
        If a domain has no class folder or no image.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from clip_invariance.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for domain, cls in [("photo", "dog"), ("photo", "cat"), ("sketch", "dog")]:
    ...     (root / domain / cls).mkdir(parents=True)
    ...     _ = (root / domain / cls / "1.png").write_bytes(b"")
    >>> data = load_image_folder(root)
    >>> data.target_names, data.y.tolist(), data.environments.tolist()
    (['cat', 'dog'], [0, 1, 1], ['photo', 'photo', 'sketch'])
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {str(root)!r}")
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if domains is None:
        domains = available
        if not domains:
            raise ValueError(f"No domain folder in {str(root)!r}; expected <domain>/<class>/<file>.")
    else:
        if isinstance(domains, str):
            raise TypeError("domains must be a list of domain names, not a single string.")
        domains = list(domains)
        missing = [d for d in domains if d not in available]
        if missing:
            raise FileNotFoundError(f"Domains {missing} not found in {str(root)!r}; available: {available}.")

    listing = {}  # (domain, class) -> sorted file paths
    for domain in domains:
        classes = sorted(
            p.name for p in (root / domain).iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not classes:
            raise ValueError(f"Domain {domain!r} has no class folder; expected {domain}/<class>/<file>.")
        n_images = 0
        for cls in classes:
            files = sorted(
                os.fspath(p)
                for p in (root / domain / cls).iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            listing[domain, cls] = files
            n_images += len(files)
        if n_images == 0:
            raise ValueError(f"Domain {domain!r} holds no image file (extensions {list(IMAGE_EXTENSIONS)}).")

    target_names = sorted({cls for _, cls in listing})
    code = {name: i for i, name in enumerate(target_names)}
    paths, y, environments = [], [], []
    for (domain, cls), files in listing.items():
        paths += files
        y += [code[cls]] * len(files)
        environments += [domain] * len(files)
    return Bunch(
        paths=np.asarray(paths, dtype=str),
        y=np.asarray(y, dtype=np.intp),
        target_names=target_names,
        environments=np.asarray(environments, dtype=str),
        domain_names=domains,
    )
