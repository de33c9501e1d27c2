"""Per-process set-up of a run's Ray workers: :func:`pin_ray_address`, the set-up hook Ray runs
in every worker process, and :func:`quiet_ray_console`, which the Train loop calls first.
Kept free of heavy imports (torch, the data sets), since a hook runs before Ray hands the
process its resources and a torch imported here would fix its thread count before Ray sets
``OMP_NUM_THREADS``."""

from __future__ import annotations

import logging
import os


def pin_ray_address() -> None:
    """Point RAY_ADDRESS at this cluster.

    Ray Train frees a stopped run's placement group through the State API, which refuses to
    guess when several Ray instances run on one machine ("Found multiple active Ray
    instances"); the group then leaks and later runs wait forever for CPUs (measured here).
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


#: Ray's own loggers whose INFO lines on the console repeat what the run prints itself: Ray
#: Train logs every report with its whole metrics dict ("Reporting training result ..."), Ray
#: Data opens and closes every epoch's execution with three lines. Their log files keep them.
QUIET_LOGGERS: tuple[str, ...] = ("ray.train", "ray.data")


def quiet_ray_console(level: int = logging.WARNING) -> None:
    """Raise the console handlers of Ray Train's and Ray Data's loggers to ``level`` in this
    process; file handlers keep every record (``/tmp/ray/session_*/logs``)."""
    for name in QUIET_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                handler.setLevel(max(handler.level, level))
