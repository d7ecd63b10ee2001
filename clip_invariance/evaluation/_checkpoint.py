"""A resumable evaluation: every finished round kept in one append-only file.

The file is JSON lines: a header with the fingerprint of the store and the
arguments it was written for, then one line per finished round (its key, its
result rows and its wall-clock seconds). A round is appended, flushed and synced as it ends, so an
interrupted evaluation loses at most the rounds in flight; a line cut short by
the interruption is dropped when the file is opened again.
"""

import json
import os

__all__ = ["open_checkpoint", "append_round"]

_FORMAT = "clip-invariance evaluation checkpoint"
_VERSION = 1


def open_checkpoint(path, fingerprint):
    """The rounds already in ``path`` (key -> rows); a new file is started with its header.

    Parameters
    ----------
    path : str or path
        The checkpoint file; created, with its parent folders, if missing.
    fingerprint : str
        What the rounds must have been computed for (store and arguments).

    Returns
    -------
    done : dict
        Round key -> list of result rows (dicts).

    Raises
    ------
    ValueError
        If the file is not a checkpoint, or was written for another fingerprint.

    Examples
    --------
    >>> import tempfile
    >>> from clip_invariance.evaluation._checkpoint import append_round, open_checkpoint
    >>> path = tempfile.mkdtemp() + "/rounds.jsonl"
    >>> open_checkpoint(path, "abc")
    {}
    >>> append_round(path, "round-1", [{"accuracy": 0.5}])
    >>> open_checkpoint(path, "abc")
    {'round-1': [{'accuracy': 0.5}]}
    """
    path = os.fspath(path)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        header = {"format": _FORMAT, "version": _VERSION, "fingerprint": fingerprint}
        _write(path, json.dumps(header) + "\n", mode="w")
        return {}
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} is not a regular file.")
    with open(path, "rb") as file:
        content = file.read()
    lines = content.split(b"\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError(f"{path!r} is not an evaluation checkpoint; choose another file.")
    if header.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {path!r} was written for another store or other arguments: delete it "
                         "to start over, or give another checkpoint file.")
    done, good = {}, len(lines[0]) + 1
    for line in lines[1:]:
        if not line:
            continue
        try:
            entry = json.loads(line)
            done[entry["round"]] = entry["rows"]
        except (ValueError, KeyError, TypeError):
            break  # a line cut short by an interruption: it and anything after it are run again
        good += len(line) + 1
    if good < len(content):
        with open(path, "r+b") as file:
            file.truncate(good)
    return done


def append_round(path, key, rows, seconds=None):
    """Append one finished round to the checkpoint, flushed and synced to disk.

    ``seconds``, the round's wall-clock time, is kept beside its rows (not in
    them): where an evaluation spends its time, read from the file.
    """
    entry = {"round": key, "rows": rows, **({} if seconds is None else {"seconds": seconds})}
    _write(path, json.dumps(entry, default=_plain) + "\n", mode="a")


def _write(path, text, mode):
    with open(path, mode, encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _plain(value):
    """numpy scalars as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
