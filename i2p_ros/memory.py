"""Process memory: the resident set size training logs with every step row, so a leak shows as a slope.

(Per-frame kernel maps once formed reference cycles, which only the cyclic garbage collector frees, and RSS
climbed by gigabytes over a training run; the engine now frees them by reference counting, see
test/test_sparse_memory.py. This reading is how such a regression would be seen in ``metrics.jsonl``.)
"""

from __future__ import annotations

import os

__all__ = ["rss_mb"]


def rss_mb() -> float | None:
    """Current resident set size in MiB (``/proc/self/statm``: cheap enough to call every step)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
