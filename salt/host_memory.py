"""Keep freed host memory in the process instead of handing it back to the OS after every batch.

glibc serves each allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps
it on free, so every batch-sized CPU tensor (a 16x224x224 batch of 8 is 77 MB in float32) pays a page
fault per 4 KiB page on first touch. Measured on 2 cores: converting and normalising one such batch
took 32 ms with the default and 8 ms with large blocks kept on the heap (`benchmarks/loader.py`, row
`dali+normalise`). A user who sets glibc's own MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_
keeps their setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_KEEP = 1 << 30  # blocks below 1 GiB come from the heap, and up to 1 GiB of free heap stays mapped
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once). True when they were set here."""
    global _done
    if _done or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
    return _done
