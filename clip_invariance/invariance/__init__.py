"""Embeddings -> the invariant subspace (CLIP-ICM), with numpy and scipy only.

:class:`~clip_invariance.InvariantProjector` (``_projector.py``) learns, in
closed form, the directions of the embeddings that keep their variance and
change little under intervention. ``_statistics.py`` holds the summable
sufficient statistics it is solved from (:class:`InterventionStatistics`,
one per block of rows), ``_chunked.py`` sums them over the chunks of a dask
array on the workers (:func:`chunked_statistics`), ``_eigensolvers.py`` holds
the two solvers (``solver="ratio"`` and ``"difference"``), ``_path.py``
solves a grid of settings from one statistics pass (:func:`projector_path`),
``_subspace.py`` the principal angles that compare two subspaces
(:func:`principal_angles`, :func:`subspace_overlap`), and ``_threads.py`` the
BLAS thread settings the statistics and the solvers run under.
"""

from ._chunked import chunked_statistics
from ._path import projector_path
from ._projector import InvariantProjector
from ._statistics import InterventionStatistics
from ._subspace import principal_angles, subspace_overlap

__all__ = [
    "InvariantProjector",
    "InterventionStatistics",
    "chunked_statistics",
    "principal_angles",
    "projector_path",
    "subspace_overlap",
]
