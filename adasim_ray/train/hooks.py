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
    one_line_ray_records()


#: Set (to anything but 0) to see Ray's tracebacks; ``adasim-ray --debug`` sets it.
DEBUG_ENV = "ADASIM_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line_ray_records() -> None:
    """Records of Ray Train's and Ray Data's loggers in this process as one line each, without
    the traceback they attach (a restart after a worker died logs ~40 lines of it on the
    console, twice): the run's own last line says what died and how to go on. Unless
    :data:`DEBUG_ENV` is set. The log files under ``/tmp/ray/session_*/logs`` keep what the
    console then shows."""
    if debugging():
        return
    make = logging.getLogRecordFactory()
    if getattr(make, "adasim_one_line", False):
        return

    def one_line(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.name.startswith(QUIET_LOGGERS) and record.levelno < logging.CRITICAL:
            text = record.getMessage()
            if record.exc_info or "\n" in text:
                record.msg, record.args = text.splitlines()[0] if text else text, ()
                record.exc_info = record.exc_text = None
        return record

    one_line.adasim_one_line = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(one_line)


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
