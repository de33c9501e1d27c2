"""What the driver hands every Train worker: one typed, frozen object (DINO's ``args``,
typed), bound to the worker loop (``functools.partial``) instead of Ray Train's
``train_loop_config`` dict, so that a field the loop reads is one the driver must set.

No Ray and no torch here: the object is pickled by the driver and unpickled in each worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adasim_ray.config import PretrainConfig

__all__ = ["WorkerPlan"]


@dataclass(frozen=True)
class WorkerPlan:
    """The run as every Train worker sees it.

    Attributes:
        config: the validated run config.
        run_name: the run's name; the cache shard actors and the plan board are named after
            it, so that rank 0 and the fetch tasks find them.
        run_dir: the run directory (a local path or a URI), where checkpoints, metrics and
            logs go.
        num_images: N, the training set's size (the schedules' iterations per epoch follow).
        settings: the key settings every checkpoint records and a resume must match
            (``rundir.checkpoint.key_settings``).
        launch: this launch's id: a user's error recorded for it stops every restart of it.
        driver_pid: the driver's process (the ``kill_driver`` fault of the tests).
        local_mode: Ray Train's local mode (``ray.num_workers: 0``), which keeps no
            checkpoint of its own: rank 0 moves each one into the run directory.
        log_every: a progress line (and TensorBoard's step scalars) every this many steps.
        stop_after: end after this many epochs as if interrupted (None: run them all).
        faults: the ``ADASIM_FAULT`` spec to inject (``train/faults.py``), or None.
        tensorboard: write TensorBoard events (rank 0).
        evaluate: run the online k-NN (False: unlabelled data without ``eval_data``).
    """

    config: PretrainConfig
    run_name: str
    run_dir: str
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)
    launch: str = ""
    driver_pid: int | None = None
    local_mode: bool = False
    log_every: int = 20
    stop_after: int | None = None
    faults: str | None = None
    tensorboard: bool = True
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images: must be >= 1, got {self.num_images}")
        if self.log_every < 1:
            raise ValueError(f"log_every: must be >= 1, got {self.log_every}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after: must be >= 1, got {self.stop_after}")
