"""Faults injected on purpose, to prove what the checkpoints promise (``ADASIM_FAULT``).

``ADASIM_FAULT="kill_worker@6,kill_shard@9,kill_driver@14"`` makes rank 0 of a run, at the
start of the given global training step (``epoch * iters_per_epoch + step``, from 0):

=================  ==========================================================================
``kill_worker@N``  SIGKILL its own Train worker process (Ray Train replaces the worker group
                   within ``ray.max_failures``; the run continues from the newest checkpoint)
``kill_shard@N``   kill cache shard actor 0 (Ray restarts it empty; it refuses calls until
                   restored from the checkpoint, which fails the step and restarts the group)
``kill_driver@N``  SIGKILL the driver (``adasim-ray pretrain --resume RUN_DIR`` finishes it)
``term_worker@N``  SIGTERM its own Train worker process, as a spot node's shutdown does
                   (the run checkpoints the step it is in and stops: ``preemption.py``)
``term_driver@N``  SIGTERM the driver, as SLURM before the time limit (the same)
``kill_save@E``    SIGKILL itself in the middle of the checkpoint of epoch E (after the model
                   file, before the shards and ``meta.json``): that save never loads
``lose_node@N``    record the Ray node it runs on and wait there: whoever runs the cluster
                   removes that node, its raylet and every process on it (the multi-node test
                   on this machine, ``tests/train/multinode.py``); Ray Train replaces the
                   worker group, rank 0 restores the lost shards from the newest checkpoint
=================  ==========================================================================

Each fault fires once per run: it is appended to ``RUN_DIR/faults.jsonl`` (flushed to disk)
*before* it acts, and a restarted worker that reaches the same step again skips it. The file
is the record a fault test reads back (which faults fired, at which step, in which process);
``RUN_DIR/resumes.jsonl`` records every restart's starting epoch, with or without faults
(both files: ``adasim_ray/rundir/logs.py``).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from adasim_ray.rundir.logs import fired, record_fault

FAULT_ENV = "ADASIM_FAULT"
KINDS = ("kill_worker", "kill_shard", "kill_driver", "kill_save", "term_worker",
         "term_driver", "lose_node")
#: How long ``lose_node`` waits for its node to go before it trains on (seconds).
LOSE_NODE_WAIT_S = 120.0


@dataclass(frozen=True)
class Fault:
    kind: str
    at: int  # global step (kill_save: epoch)


def parse_faults(text: str | None) -> list[Fault]:
    """``"kill_worker@6,kill_shard@9"`` -> faults; ValueError (one line) on a bad entry."""
    faults = []
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        kind, sep, at = item.partition("@")
        if kind not in KINDS or not sep or not at.isdigit():
            raise ValueError(
                f"{FAULT_ENV}: bad entry {item!r}: expected KIND@N with KIND one of "
                f"{', '.join(KINDS)} and N a step number (kill_save: an epoch)"
            )
        faults.append(Fault(kind, int(at)))
    return faults


class FaultInjector:
    """Rank 0's side of ``ADASIM_FAULT`` (see the module docstring): the training loop calls
    :meth:`at_step` at the start of every step and :meth:`during_save` between the files of
    a checkpoint; with no faults (every other rank, and every normal run) both do nothing.

    Args:
        faults: from :func:`parse_faults`.
        run_dir: where ``faults.jsonl`` is kept.
        driver_pid: the driver's process (``kill_driver``).
        shard_handles: the cache shard actors (``kill_shard`` kills the first).
    """

    def __init__(self, faults: list[Fault], run_dir: str, driver_pid: int | None = None,
                 shard_handles: list[Any] | tuple[Any, ...] = ()) -> None:
        self.faults, self.run_dir, self.driver_pid = faults, run_dir, driver_pid
        self.shard_handles = list(shard_handles)

    def _claim(self, fault: Fault, **detail: Any) -> bool:
        """Record the fault unless it already fired; True if this call should act."""
        done = {(f["fault"], f["at"]) for f in fired(self.run_dir)}
        if (fault.kind, fault.at) in done:
            return False
        record_fault(self.run_dir, fault.kind, fault.at, **detail)
        print(f"[adasim] fault injected: {fault.kind}@{fault.at}", flush=True)
        return True

    def at_step(self, it: int) -> None:
        """Called at the start of global step ``it``."""
        for fault in self.faults:
            if fault.at != it or fault.kind == "kill_save":
                continue
            if fault.kind == "lose_node":
                import ray

                # The record names the node; its remover reads it (faults.jsonl).
                if self._claim(fault, node=ray.get_runtime_context().get_node_id()):
                    time.sleep(LOSE_NODE_WAIT_S)
                continue
            if not self._claim(fault):
                continue
            if fault.kind == "kill_worker":
                os.kill(os.getpid(), signal.SIGKILL)
            elif fault.kind == "kill_shard":
                import ray

                ray.kill(self.shard_handles[0], no_restart=False)
            elif fault.kind == "term_worker":
                os.kill(os.getpid(), signal.SIGTERM)
            elif fault.kind == "term_driver" and self.driver_pid is not None:
                os.kill(self.driver_pid, signal.SIGTERM)
            elif fault.kind == "kill_driver" and self.driver_pid is not None:
                # The driver's pid only means something on its own machine (a local test).
                os.kill(self.driver_pid, signal.SIGKILL)
                time.sleep(60)  # the job goes down with its driver; do not train on

    def during_save(self, epoch: int) -> None:
        """Called between the files of a checkpoint write."""
        for fault in self.faults:
            if fault.kind == "kill_save" and fault.at == epoch and self._claim(fault):
                os.kill(os.getpid(), signal.SIGKILL)
