"""Embeddings -> the invariant subspace (CLIP-ICM), with numpy and scipy only.

:class:`InvariantProjector` learns, in closed form, the directions of the
embeddings that keep their variance and change little under intervention:
``_statistics.py`` holds the summable sufficient statistics it is solved
from (:class:`InterventionStatistics`, per block of rows; ``_chunked.py``
sums them over a dask array's chunks on the workers), ``_eigensolvers.py``
the two solvers, and ``_subspace.py`` the principal angles that compare two
subspaces.
"""

from ._chunked import chunked_statistics
from ._projector import InvariantProjector
from ._statistics import InterventionStatistics
from ._subspace import principal_angles, subspace_overlap

__all__ = [
    "InvariantProjector",
    "InterventionStatistics",
    "chunked_statistics",
    "principal_angles",
    "subspace_overlap",
]
