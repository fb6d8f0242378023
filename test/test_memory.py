"""Process-memory helpers: the RSS we log follows real allocations; heap trimming runs on glibc."""

import platform
import resource

import numpy as np
import pytest

from i2p_ros.memory import rss_mb, trim_heap

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/statm (Linux)")


@linux_only
def test_rss_follows_a_touched_allocation_and_agrees_with_getrusage():
    before = rss_mb()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
    during = rss_mb()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    assert during - before > 180
    assert during <= peak_mb + 1  # never above the kernel's own high-water mark
    del block
    assert rss_mb() < during - 180  # a large block is mmap'ed: freeing it returns the pages at once


@linux_only
def test_trim_heap_returns_freed_small_blocks():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    # many small heap blocks (below the mmap threshold), then free all but the last so the heap cannot shrink
    # by itself from the top: only malloc_trim gives the freed pages back
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    keep = bytearray(64 * 1024)
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])
    del blocks
    before = rss_mb()
    assert trim_heap() is True
    assert rss_mb() < before - 50
    del keep
