"""How a run ends when something fails: a user's error in one line, and a fault it could not
survive in one line that says what died, where the run got to and how to continue it.

Faults (a worker or an actor killed, a node lost) are survived ``ray.max_failures`` times by
default: Ray Train restarts the worker group from the newest checkpoint. An error the user
must fix (a corrupt image, a bad config met on a worker) would fail the same way on every
restart, so the first worker that meets one records it in the run directory
(``stopped.json``, for this launch only) and every restart of this launch raises it again at
once instead of training up to it (``adasim_ray/rundir/logs.py``).
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from adasim_ray.errors import (
    AdasimError,
    CheckpointError,
    ConfigError,
    DataError,
    RunStoppedError,
    StorageError,
    StorageStoppedError,
    first_line,
)
from adasim_ray.resources.store import permanent_error

_KINDS = {cls.__name__: cls for cls in (DataError, ConfigError, CheckpointError)}


def user_error(err: BaseException) -> AdasimError | None:
    """The data or config error at the root of a failed run (a corrupt image met by a Ray
    Data task, say), as a one-line error of ours; None when the failure is something else.

    Ray wraps a task's exception in its own (and Train in a worker-group error), so both the
    exception chain and, failing that, the text of the traceback are searched."""
    seen, todo = set(), [err]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if (storage := permanent_error(cur)) is not None:  # refused for good (resources/store.py)
            return StorageError(first_line(storage))
        if isinstance(cur, tuple(_KINDS.values())):
            return type(cur)(str(cur).splitlines()[0]) if str(cur) else cur
        # Ray's wrappers: a task's error, a Train worker's, the Train controller's
        todo += [cur.__cause__, cur.__context__, getattr(cur, "cause", None),
                 getattr(cur, "_base_exc", None), getattr(cur, "controller_failure", None)]
        failures = getattr(cur, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    for line in reversed(str(err).splitlines()):
        for name, kind in (("DataError: ", DataError), ("ConfigError: ", ConfigError)):
            if name in line:
                return kind(line.split(name, 1)[1].strip())
    return None


def what_died(err: BaseException) -> str:
    """One line on the failure under Ray's wrapping: the first worker's error when Ray Train
    lists them (``WorkerGroupError.worker_failures``), else the error itself."""
    failures = getattr(err, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        rank, cause = sorted(failures.items())[0]
        return f"worker {rank}: {first_line(cause)}"[:300]
    return first_line(err)[:300]


def run_stopped(err: BaseException, *, run_dir: str, epochs_done: int, epochs: int,
                checkpoint_epoch: int | None, max_failures: int,
                command: str = "adasim-ray") -> RunStoppedError:
    """The one-line :class:`RunStoppedError` of a run that a fault ended."""
    restarts = ("no restart allowed (ray.max_failures=0)" if max_failures == 0 else
                f"after {max_failures} restart(s) (ray.max_failures)")
    saved = ("no checkpoint yet" if checkpoint_epoch is None
             else f"its newest checkpoint is of epoch {checkpoint_epoch}")
    return RunStoppedError(
        f"the run stopped in epoch {min(epochs_done + 1, epochs)} of {epochs}, {restarts}: "
        f"{what_died(err)}; {saved}; continue it with: {command} pretrain --resume {run_dir}")


def stopped_on_sigterm(run_dir: str, epoch: int, step: int, epochs: int,
                       command: str = "adasim-ray") -> RunStoppedError:
    """The one line of a run that SIGTERM stopped after its checkpoint (``preemption.py``)."""
    return RunStoppedError(
        f"the run stopped on SIGTERM in epoch {epoch} of {epochs} after step {step}, with a "
        f"checkpoint of that step; continue it with: {command} pretrain --resume {run_dir}")


def ending(err: BaseException, **context: Any) -> AdasimError:
    """What a failed run raises: the user's error under ``err`` if there is one, else
    :func:`run_stopped`."""
    found = user_error(err)
    if isinstance(found, StorageError):
        return storage_stopped(found, **context)
    return found or run_stopped(err, **context)


def storage_stopped(err: StorageError, *, run_dir: str, epochs_done: int, epochs: int,
                    checkpoint_epoch: int | None, max_failures: int,
                    command: str = "adasim-ray") -> StorageStoppedError:
    """The one line of a run that storage refused for good: the URI and the cause, where the
    run got to, and the command that continues it once that is fixed."""
    saved = ("no checkpoint yet" if checkpoint_epoch is None
             else f"its newest checkpoint is of epoch {checkpoint_epoch}")
    return StorageStoppedError(
        f"{first_line(err)}; the run stopped in epoch {min(epochs_done + 1, epochs)} of "
        f"{epochs} at once (not retried, no restart); {saved}; once that is fixed, continue "
        f"it with: {command} pretrain --resume {run_dir}")


class StopOnStorageError(UserCallback):
    """Ends a run at once, on Ray Train's controller, when a worker met a permanent storage
    error: Train would restart the worker group up to ``max_failures`` times, each meeting it
    again and redoing epochs. An error raised here is the controller's, which Train does not
    retry."""

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]
                        ) -> None:
        for error in worker_exceptions.values():
            found = user_error(error)
            if isinstance(found, StorageError):
                raise found
