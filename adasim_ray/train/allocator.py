"""How a training process keeps the memory it frees, rather than handing it back to the
system and faulting it in again at the next step.

glibc's malloc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it
when freed, and hands the free top of its heaps back above its trim threshold. Both
thresholds start at 128 KiB and move with what the process freed last, so a training step's
activations (a few MiB each, allocated and freed every step) were sometimes kept and
sometimes paged in anew: measured with the demo's ConvNet on 2 cores, the same loop ran at
300-560 images/s with 0.3-1.5 million page faults per 8 s, slower in a process that had run
torch work before (the Train worker). With the thresholds fixed (:func:`keep_freed_memory`)
it ran at 450-585 with 0.03-0.17 million, whatever ran before. The memory kept is what the
step needs anyway at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc's largest allowed value on 64 bits).
MMAP_THRESHOLD = 32 * 1024**2
#: The free top of a heap goes back to the system only beyond this.
TRIM_THRESHOLD = 1024**3


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (Linux with glibc; elsewhere
    nothing). Returns whether both were set. Call it once, early in a process that trains or
    makes views."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # a libc without mallopt: its allocator as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
