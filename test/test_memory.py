"""The RSS training logs follows real allocations (checked in a fresh process)."""

import platform
import subprocess
import sys

import pytest

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/statm (Linux)")


_PROBE = """
import resource, numpy as np
from i2p_ros.memory import rss_mb
before = rss_mb()
block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
during = rss_mb()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
del block
print(before, during, peak, rss_mb())
"""


@linux_only
def test_rss_follows_a_touched_allocation_and_agrees_with_getrusage():
    # A fresh process: at the end of a long test session the reading did once not move at all for a new
    # 200 MiB block (not pinned down; kernel RSS-counter batching or huge pages are the suspects).
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60)
    before, during, peak_mb, after = (float(v) for v in out.stdout.split())
    assert during - before > 180
    assert during <= peak_mb + 1  # never above the kernel's own high-water mark
    assert after < during - 180  # a large block is mmap'ed: freeing it returns the pages at once
