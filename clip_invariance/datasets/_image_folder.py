"""DomainBed-style image folders: ``<root>/<domain>/<class>/<image file>``."""

import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image_folder(root, environments=None):
    """List the images of a multi-environment dataset laid out as ``<environment>/<class>/<file>``.

    This is the layout of the DomainBed datasets (PACS, VLCS, OfficeHome,
    TerraIncognita, DomainNet), whose environments are called domains there.
    Only paths are returned; decoding is the embedder's job. Symbolic links
    are followed, and a file reached twice (two folders linking to the same
    place) is an error: an image in two environments would put target images
    into training.

    Parameters
    ----------
    root : str or path
        Folder holding one sub-folder per environment.
    environments : list of str, default=None
        Environments to load, in this order; ``None`` loads all, sorted by
        name.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        - ``paths``: ndarray of str, shape (n,), the image files, sorted
          within each environment and class.
        - ``y``: ndarray of int, shape (n,), index into ``class_names``.
        - ``class_names``: list of str, the class names (sorted union over
          the loaded environments, so codes agree across environments).
        - ``environments``: ndarray of str, shape (n,), the environment of
          each image; pass it as ``environments`` to the projector or to
          :func:`~clip_invariance.evaluation.leave_one_domain_out`.
        - ``environment_names``: list of str, the loaded environments.

    Raises
    ------
    FileNotFoundError
        If ``root`` or a requested environment does not exist.
    ValueError
        If no environment is requested, an environment has no class folder
        or no image, or one image file is reached through two paths.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from clip_invariance.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for environment, cls in [("photo", "dog"), ("photo", "cat"), ("sketch", "dog")]:
    ...     (root / environment / cls).mkdir(parents=True)
    ...     _ = (root / environment / cls / "1.png").write_bytes(b"")
    >>> data = load_image_folder(root)
    >>> data.class_names, data.y.tolist(), data.environments.tolist()
    (['cat', 'dog'], [0, 1, 1], ['photo', 'photo', 'sketch'])
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {str(root)!r}")
    available = _subfolders(root)
    if environments is None:
        environments = available
        if not environments:
            raise ValueError(
                f"No environment folder in {str(root)!r}; expected <environment>/<class>/<file>."
            )
    else:
        if isinstance(environments, str):
            raise TypeError("environments must be a list of environment names, not a single string.")
        environments = list(environments)
        if not environments:
            raise ValueError("environments is empty: name at least one environment folder, or pass None.")
        if len(set(environments)) != len(environments):
            raise ValueError(f"environments lists a folder twice: {environments}.")
        missing = [e for e in environments if e not in available]
        if missing:
            raise FileNotFoundError(
                f"Environments {missing} not found in {str(root)!r}; available: {available}."
            )

    listing = {}  # (environment, class) -> sorted file paths
    for environment in environments:
        classes = _subfolders(root / environment)
        if not classes:
            raise ValueError(
                f"Environment {environment!r} has no class folder; expected {environment}/<class>/<file>."
            )
        n_images = 0
        for cls in classes:
            files = sorted(
                os.fspath(p)
                for p in (root / environment / cls).iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            listing[environment, cls] = files
            n_images += len(files)
        if n_images == 0:
            raise ValueError(
                f"Environment {environment!r} holds no image file (extensions {list(IMAGE_EXTENSIONS)})."
            )
    _check_no_file_twice(listing)

    class_names = sorted({cls for _, cls in listing})
    code = {name: i for i, name in enumerate(class_names)}
    paths, y, labels = [], [], []
    for (environment, cls), files in listing.items():
        paths += files
        y += [code[cls]] * len(files)
        labels += [environment] * len(files)
    return Bunch(
        paths=np.asarray(paths, dtype=str),
        y=np.asarray(y, dtype=np.intp),
        class_names=class_names,
        environments=np.asarray(labels, dtype=str),
        environment_names=environments,
    )


def _subfolders(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_no_file_twice(listing):
    seen = {}  # real path -> (environment, class, path as listed)
    for (environment, cls), files in listing.items():
        for path in files:
            real = os.path.realpath(path)
            if real in seen:
                first = seen[real]
                raise ValueError(
                    f"The same image is listed twice, as {first[2]!r} ({first[0]}/{first[1]}) and "
                    f"{path!r} ({environment}/{cls}): a folder or file links to another. Remove "
                    "the link, or load only one of the environments."
                )
            seen[real] = (environment, cls, path)
