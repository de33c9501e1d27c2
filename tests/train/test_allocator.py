"""The allocator's thresholds of a training process (``train/allocator.py``): a block of a
step's size comes from the heap and stays there once freed, where glibc as it comes maps it
afresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adasim_ray.train.allocator import keep_freed_memory

# In a fresh process: where a 16 MiB block lands (below the program break = the heap, above =
# a mapping of its own), and whether freeing it gives the heap back.
PROBE = """
import ctypes, json, sys
import numpy as np
from adasim_ray.train.allocator import keep_freed_memory
set_ = keep_freed_memory() if sys.argv[1] == "set" else None
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
block = np.ones(16 * 1024**2, dtype=np.uint8)
in_heap = block.ctypes.data < libc.sbrk(0)
top = libc.sbrk(0)
del block
kept = libc.sbrk(0) == top
print(json.dumps({"set": set_, "in_heap": in_heap, "kept": kept}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_steps_block_comes_from_the_heap_and_stays_there():
    assert _probe("set") == {"set": True, "in_heap": True, "kept": True}
    plain = _probe("plain")
    assert plain["in_heap"] is False  # glibc as it comes: a mapping of its own, unmapped on free


def test_elsewhere_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
