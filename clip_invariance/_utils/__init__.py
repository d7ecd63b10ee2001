"""Package-wide internals: checks, embedding helpers and dask support shared by every subpackage.

Like ``sklearn.utils``, but private: nothing here is part of the public API,
and this package imports no other part of ``clip_invariance``.
"""

from ._dask import align_labels, check_row_chunks, chunk_error, is_dask_array, map_classifier_rows, map_rows
from ._doc_link import DocLinkMixin
from ._embeddings import (
    average_prompt_ensemble,
    check_classes,
    check_prompt_embeddings,
    class_prototypes,
    encode_labels,
    l2_normalize,
    normalize_embeddings,
    project_embeddings,
    refit_prompts,
)
from ._validation import check_labels, unchanged_on_error

__all__ = [
    "DocLinkMixin",
    "align_labels",
    "average_prompt_ensemble",
    "check_classes",
    "check_labels",
    "check_prompt_embeddings",
    "check_row_chunks",
    "chunk_error",
    "class_prototypes",
    "encode_labels",
    "is_dask_array",
    "l2_normalize",
    "map_classifier_rows",
    "map_rows",
    "normalize_embeddings",
    "project_embeddings",
    "refit_prompts",
    "unchanged_on_error",
]
