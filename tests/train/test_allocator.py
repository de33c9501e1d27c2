"""The allocator's thresholds of a training process (``train/allocator.py``): a block of a
step's size comes from the heap and stays there once freed, where glibc as it comes maps it
afresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adasim_ray.train.allocator import TUNABLES, allocator_env, keep_freed_memory
from adasim_ray.train.run import worker_runtime_env

# In a fresh process: where a 16 MiB block lands (below the program break = the heap, above =
# a mapping of its own), and whether freeing it gives the heap back.
PROBE = """
import ctypes, json, sys, threading
import numpy as np
from adasim_ray.train.allocator import keep_freed_memory
set_ = keep_freed_memory() if sys.argv[1] == "set" else None
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
found = {}
def allocate():
    block = np.ones(16 * 1024**2, dtype=np.uint8)
    found["in_heap"] = block.ctypes.data < libc.sbrk(0)
    top = libc.sbrk(0)
    del block
    found["kept"] = libc.sbrk(0) == top
if sys.argv[2] == "thread":  # as Ray Train runs the training loop
    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
else:
    allocate()
print(json.dumps({"set": set_, **found}))
"""


def _probe(mode: str, where: str = "main", tunables: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", PROBE, mode, where], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_steps_block_comes_from_the_heap_and_stays_there():
    assert _probe("set") == {"set": True, "in_heap": True, "kept": True}
    plain = _probe("plain")
    assert plain["in_heap"] is False  # glibc as it comes: a mapping of its own, unmapped on free


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables: Linux only")
def test_a_worker_started_with_the_tunables_keeps_a_threads_block_in_the_one_heap():
    """Ray Train's loop runs in a thread: with an arena of its own, glibc unmaps the arena's
    heap once it is empty; with one arena the block stays in the process's heap."""
    assert _probe("plain", "thread", TUNABLES) == {"set": None, "in_heap": True, "kept": True}
    assert _probe("plain", "thread")["in_heap"] is False  # an arena of the thread's own


def test_workers_get_the_tunables_unless_the_user_set_some(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert allocator_env() == {"GLIBC_TUNABLES": TUNABLES}
    assert worker_runtime_env()["env_vars"] == {"GLIBC_TUNABLES": TUNABLES}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert allocator_env() == {}
    assert "env_vars" not in worker_runtime_env()


def test_elsewhere_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
