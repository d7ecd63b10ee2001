"""BLAS threads for the projector: one thread for small work, and for work that is parallel already.

A BLAS call on several threads waits for all of them at its end. The
projector's ``D x D`` solves are hundreds of small calls, and its statistics
are products of tiles of rows that threads of our own can share out: in
both, BLAS's own threads save little on a quiet machine and, when another job
holds a core, each call stalls until its descheduled thread runs again (on 2
cores with another job: PCA's ``fit``, one product on two BLAS threads and an
eigensolve, 1-5 s instead of 0.3 s). :func:`single_threaded_blas` sets every
BLAS library of the process to one thread (threadpoolctl) for a block of
code, and :func:`blas_threads` says how many threads BLAS would have used: the
number of our own threads to run instead.

The thread counts are process-wide: one thread at a time may change them
(a lock); another thread that asks meanwhile is told no, and runs as it is.
"""

import contextlib
import threading

__all__ = ["blas_threads", "single_threaded_blas"]

_lock = threading.Lock()
_controller = None


def _get_controller():
    global _controller
    if _controller is None:  # the BLAS libraries loaded by now: numpy's and scipy's
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def blas_threads():
    """The most threads a BLAS library of this process would use now (1 without BLAS)."""
    counts = [info["num_threads"] for info in _get_controller().info() if info["user_api"] == "blas"]
    return max(counts, default=1)


@contextlib.contextmanager
def single_threaded_blas():
    """Run a block with BLAS on one thread; yield whether it is (False: another thread holds the setting).

    Examples
    --------
    >>> from clip_invariance.invariance._threads import blas_threads, single_threaded_blas
    >>> with single_threaded_blas() as alone:
    ...     alone, blas_threads()
    (True, 1)
    """
    if not _lock.acquire(blocking=False):  # another thread set the counts: leave them to it
        yield False
        return
    try:
        with _get_controller().limit(limits=1, user_api="blas"):
            yield True
    finally:
        _lock.release()
