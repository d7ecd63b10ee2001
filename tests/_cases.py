"""Inputs and checks that more than one test file uses: import them, do not copy them.

tests/ is on ``sys.path`` (conftest.py lives there), so every test file can
``from _cases import ...``.
"""

import numpy as np

from clip_invariance import CLIPEmbedder

# The prompt-shape message of both classifiers (clip_invariance._utils.check_prompt_embeddings).
PROMPT_SHAPES = r"must have shape \(n_classes, n_features\) or \(n_templates, n_classes, n_features\)"


def with_value(X, index, value):
    """A copy of ``X`` with ``X[index] = value``: one bad cell, row or block in clean input."""
    X = X.copy()
    X[index] = value
    return X


def snapshot(estimator):
    """The estimator's attributes, arrays copied, for :func:`assert_unchanged`."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(estimator).items()}


def assert_unchanged(estimator, state):
    """The estimator holds the same attributes as in ``state``: equal arrays, the very same other objects."""
    assert set(vars(estimator)) == set(state)
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(estimator, key), value)
        else:
            assert getattr(estimator, key) is value, key


def cpu_embedder(model, **params):
    """A CLIPEmbedder on the CPU, random weights unless given, small batches, no worker processes."""
    params = {"pretrained": None, "device": "cpu", "batch_size": 4, "num_workers": 0, **params}
    return CLIPEmbedder(model, **params)


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of ``clip-invariance argv``, in process."""
    from clip_invariance.cli import main

    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own exits: usage errors, --help, --version
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err
