"""The heap bound the app sets: freed multi-megabyte buffers go back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest
from training_helpers import ROOT

# Frees one 5 MB block (glibc then raises its mmap threshold above 5 MB), then allocates 60
# blocks of 5 MB with small blocks pinned between them, frees the big ones and prints how
# much RSS grew: 5 MB blocks that came from the heap stay resident behind the small ones.
_SCRIPT = """
import os, sys
from captioner.malloc import bound_heap_growth

def rss_mb():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "bounded":
    assert bound_heap_growth()
block = bytearray(5 << 20)
del block
before = rss_mb()
big, small = [], []
for _ in range(60):
    big.append(bytearray(5 << 20))
    small.append(bytearray(64 << 10))
del big
print(rss_mb() - before)
"""


def _growth_mb(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_freed_large_buffers_return_to_the_os_once_bounded():
    assert _growth_mb("default") > 150  # glibc's default keeps ~300 MB resident (this is what grew the app)
    assert _growth_mb("bounded") < 30
