"""Data: synthetic generators of the papers' causal model, an image-folder loader, the embedding store.

The generators give embeddings with a known invariant subspace (ground truth
for tests and benchmarks); :func:`load_image_folder` lists an
``root/environment/class/image`` folder; the store functions read and write
a dataset's embeddings on disk, readable with numpy alone.
"""

from ._image_folder import load_image_folder
from ._store import (
    check_shard_path,
    check_store_path,
    is_store,
    known_rows,
    load_embeddings,
    save_embeddings,
    save_pending,
)
from ._synthetic import make_invariant_embeddings
from ._templates import make_multi_template_embeddings

__all__ = [
    # generators
    "make_invariant_embeddings",
    "make_multi_template_embeddings",
    # image folders
    "load_image_folder",
    # the embedding store
    "load_embeddings",
    "save_embeddings",
    "is_store",
    # writing a store resumably (the folder embedder and the command line)
    "check_store_path",
    "check_shard_path",
    "known_rows",
    "save_pending",
]
