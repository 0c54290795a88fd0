"""benchmarks/rss_sampler.py: a child's memory is charged to the child, not to this process."""

import subprocess
import sys

import pytest

from benchmarks import rss_sampler

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A child that touches 256 MiB (every page written, so it is resident), says so, and waits.
CHILD = (
    "b = bytearray(256 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    "print('ready', flush=True); input()"
)


def test_child_memory_is_the_childs():
    with rss_sampler.RssSampler(interval=0.05) as s:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        assert child.pid in rss_sampler.descendants(s.root)
        s.sample()
        child.communicate("\n", timeout=30)
    # 256 MiB = 0.25 GiB, plus an interpreter (~10 MiB); this process did not grow by it.
    # (Other tests' children, if any are alive, may be larger: only this child is pinned.)
    assert 0.25 <= s.peak_of(child.pid) < 0.35
    peaks = s.peaks
    assert peaks["largest_child"] >= round(s.peak_of(child.pid), 2)
    assert peaks["all"] >= peaks["self"] + 0.25
    assert peaks["children"] >= 1
