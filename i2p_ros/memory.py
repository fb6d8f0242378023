"""Process memory: the resident set size we log, and handing freed heap back to the OS.

Sparse networks allocate tensors whose sizes change with every scan. glibc's allocator keeps freed
blocks of the per-thread arenas, so a long run's RSS creeps up even though live memory is flat;
``malloc_trim(0)`` returns those blocks. Both helpers are no-ops (``None`` / ``False``) off Linux/glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["rss_mb", "trim_heap"]


def rss_mb() -> float | None:
    """Current resident set size in MiB (``/proc/self/statm``: cheap enough to call every step)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Return freed heap pages to the OS (glibc ``malloc_trim(0)``); ``True`` if it ran."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
