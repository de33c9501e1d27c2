"""How a training process keeps the memory it frees, rather than handing it back to the
system and faulting it in again at the next step.

glibc's malloc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it
when freed, hands the free top of its heaps back above its trim threshold, and gives each
thread that allocates an arena of its own, whose heaps are unmapped whole once empty. Both
thresholds start at 128 KiB and move with what the process freed last, and Ray Train runs
the training loop in a thread of its own: a step's activations (a few MiB each, allocated
and freed every step) were paged in anew at every step. Measured with the demo's ConvNet on
2 cores: in a Train worker ~10,000 page faults a step (~500,000 an epoch of 47 steps); with
the three settings of :data:`TUNABLES` none after the first epoch, and the Ray run at 274
and 243 images/s against 234 and 212 without, in two pairs of runs. The bare loop alone
ran at 300-560 images/s with 0.3-1.5 million faults per 8 s, slower in a process that had
run torch work before; with the thresholds fixed at 450-585 with 0.03-0.17 million. The
memory kept is what the step needs anyway at its peak.

glibc reads :data:`TUNABLES` when a process starts: a Ray that adasim-ray starts or joins
passes them to its worker processes (``train/run.py``). Where that is not so (a ``ray job
submit`` with a runtime_env of its own), :func:`keep_freed_memory` fixes the two thresholds
at run time; the arenas of threads already running stay as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc's largest allowed value on 64 bits).
MMAP_THRESHOLD = 32 * 1024**2
#: The free top of a heap goes back to the system only beyond this.
TRIM_THRESHOLD = 1024**3

#: The same for a process about to start, one arena for all its threads included (glibc's
#: ``GLIBC_TUNABLES`` environment variable; other C libraries ignore it).
TUNABLES = (f"glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:"
            f"glibc.malloc.trim_threshold={TRIM_THRESHOLD}")


def allocator_env() -> dict[str, str]:
    """Environment variables for worker processes: :data:`TUNABLES`, unless this process's
    environment sets ``GLIBC_TUNABLES`` already (the user's choice stands)."""
    return {} if "GLIBC_TUNABLES" in os.environ else {"GLIBC_TUNABLES": TUNABLES}


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
