"""The embedder's per-input cache files: permissions (issue 20, item 15)."""

import os

import numpy as np

from clip_invariance.embedding._cache import _EmbeddingCache


def test_cache_entries_follow_the_umask(tmp_path):
    """Entries are shared as the umask allows (mkstemp would make them 0600, readable by their owner only)."""
    cache = _EmbeddingCache(str(tmp_path / "cache"), 4)
    old = os.umask(0o022)
    try:
        cache.write([("text", "a dog")], np.ones((1, 4), np.float32))
    finally:
        os.umask(old)
    (entry,) = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "cache") for f in files]
    assert os.stat(entry).st_mode & 0o777 == 0o644
    out = np.zeros((1, 4), np.float32)
    assert cache.read([("text", "a dog")], out).tolist() == [True] and out.tolist() == [[1.0] * 4]
