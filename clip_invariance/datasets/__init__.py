"""Data: synthetic generators of the papers' causal model, an image-folder loader, the embedding store.

``_synthetic.py`` generates CLIP-like embeddings with a known invariant
subspace, their augmented views and text interventions
(:func:`make_invariant_embeddings`: the ground truth of the tests, the
benchmarks and ``clip-invariance demo``); ``_templates.py`` adds several
prompt templates and views in the columns layout, for the front door
(:func:`make_multi_template_embeddings`). ``_image_folder.py`` lists a
DomainBed-style ``root/environment/class/image`` folder
(:func:`load_image_folder`). ``_store.py`` reads and writes an embedding
store, a dataset's embeddings on disk that numpy alone can read
(:func:`load_embeddings`, :func:`save_embeddings`), and the pending files
of an unfinished embedding run; ``_store_format.py`` holds the store's
format and the checks every read and write makes.
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
