"""Thread counts changed for a block of code only: the caller's settings are always restored.

Library calls must not leave a process's thread settings changed (a notebook user's torch would stay on one
thread). Both contexts are cheap to enter; torch is imported only by `torch_threads`.
"""

from __future__ import annotations

from contextlib import contextmanager

_CONTROLLER = None


@contextmanager
def torch_threads(count: int | None):
    """torch's intra-op threads set to `count` (None: left as they are) inside the block."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def blas_threads(count: int | None):
    """A context running BLAS/LAPACK on `count` threads (None: as they are). Used for the many small
    products and factorisations where threads only synchronise (and stall badly on a busy machine). The
    threadpoolctl controller is built once: building one scans every loaded library (milliseconds a time)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=count, user_api="blas")


def one_blas_thread():
    """`blas_threads(1)`."""
    return blas_threads(1)


def blas_thread_count() -> int | None:
    """The largest thread count of the loaded BLAS libraries, or None when none can be inspected."""
    try:
        from threadpoolctl import threadpool_info

        counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or unable to inspect: unknown
        return None
    return max(counts) if counts else None
