"""Keep a long-running server's memory flat under glibc's allocator.

glibc raises its mmap threshold every time a large block is freed, so after a few requests
the multi-megabyte buffers of each image (decoded pixels, feature maps, decoder scratch)
are carved out of the heap instead of being mapped, and fragmented heaps never shrink.
Many worker threads each get their own heap ("arena") on top of that. Fixing the threshold
and capping the arenas keeps the serving process's RSS flat (docs/robustness.md). The
threshold is a trade: each mapped block is page-faulted afresh, so 1 MiB flattened RSS best
but slowed a caption by half; 4 MiB costs a tenth of that and still levels off, 8 MiB did not.
Freed pages inside the heaps still count as resident until glibc trims them, which it does
only from a heap's top: after clips of 64-megapixel frames the app stayed tens of MB above
where it started. :func:`release_free_memory` hands all free pages back at once (the app
calls it after each clip). Elsewhere (musl, macOS, Windows) these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["bound_heap_growth", "release_free_memory"]

_M_MMAP_THRESHOLD = -3  # mallopt parameters from glibc's malloc.h
_M_ARENA_MAX = -8


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc, else None (looked up once: the app asks after each clip)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def bound_heap_growth(*, mmap_threshold: int = 4 << 20, arenas: int = 2) -> bool:
    """Map blocks of ``mmap_threshold`` bytes or more (returned to the OS when freed) and use
    at most ``arenas`` heaps. Returns False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:
        return False


def release_free_memory() -> bool:
    """Return the free pages of every heap to the OS (glibc's ``malloc_trim(0)``), so memory a
    request freed stops counting as resident. Returns whether any was released; False where
    the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False
