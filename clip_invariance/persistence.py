"""Sharing fitted estimators safely: the exact types to trust when loading a skops file.

`skops <https://skops.readthedocs.io>`_ saves a fitted scikit-learn object
without pickle and, on loading, refuses every type it does not know unless
the caller trusts it by name. Trust :func:`trusted_types`, the exact list of
the classes this package's fitted estimators are made of, never a prefix such
as ``"clip_invariance."``: a file can name any function or re-exported class
under a trusted-looking prefix (see :doc:`/security`).
"""

__all__ = ["trusted_types"]

# The classes a fitted estimator of this package is made of, beyond what skops trusts by
# itself (numpy arrays and dtypes, scikit-learn's estimators, builtins). Each is a class of
# ours, named by the private module that defines it; tests/test_security.py fails when an
# estimator gains a type that is not here, or when one here is no longer used.
_TRUSTED_TYPES = (
    "clip_invariance.baselines._tip_adapter.TipAdapterClassifier",
    "clip_invariance.baselines._wise.WiSEClassifier",
    "clip_invariance.embedding._embedder.CLIPEmbedder",
    "clip_invariance.front_door._adapters.TemplateAdapters",
    "clip_invariance.front_door._classifier.FrontDoorEnsembleClassifier",
    "clip_invariance.invariance._projector.InvariantProjector",
    "clip_invariance.invariance._statistics.InterventionStatistics",
    "clip_invariance.zero_shot.ZeroShotInvariantClassifier",
)


def trusted_types():
    """The type names to pass to ``skops.io.load(..., trusted=...)`` for this package's estimators.

    The exact classes that fitted estimators of this package (and pipelines
    of them with scikit-learn steps) hold, beyond the numpy and scikit-learn
    types skops trusts by itself. A file that asks for anything else is
    refused by skops with :class:`skops.io.exceptions.UntrustedTypesFoundException`,
    naming the type: do not add it to the list unless you know what it is.

    Returns
    -------
    names : list of str
        Fully qualified class names, sorted; a new list on every call.

    Examples
    --------
    >>> import numpy as np
    >>> import skops.io as sio
    >>> from clip_invariance import InvariantProjector
    >>> from clip_invariance.persistence import trusted_types
    >>> X = np.random.default_rng(0).normal(size=(20, 4))
    >>> proj = InvariantProjector(2).fit(X, view_groups=np.arange(20) // 2)
    >>> loaded = sio.loads(sio.dumps(proj), trusted=trusted_types())
    >>> bool(np.array_equal(loaded.transform(X), proj.transform(X)))
    True
    >>> "clip_invariance.invariance._projector.InvariantProjector" in trusted_types()
    True
    >>> "numpy.testing._private.utils.runstring" in trusted_types()  # a prefix is not enough
    False
    """
    return sorted(_TRUSTED_TYPES)
