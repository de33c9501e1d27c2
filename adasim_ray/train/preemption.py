"""Pre-emption: SIGTERM (a spot node's shutdown, SLURM's signal before the time limit) asks the
run to checkpoint where it is and stop, instead of ending the process at once.

A SIGTERM to the driver reaches the Train workers through the plan board
(:meth:`PlanBoard.request_stop`); one to a Train worker's process sets this process's flag
(:data:`STOP`), in the handler that :class:`SaveOnSigterm` installs. The worker loop asks
:func:`stop_agreed` after every step: all ranks agree on the same step (an ``all_reduce`` of
the flag), rank 0 writes a checkpoint of that step (``train/loop.py``), every rank returns,
and the driver ends in one line with the ``--resume`` command.

The wait is bounded: a stop is taken at the end of the running step (or, between epochs,
after the next epoch's first step), and a process that has not stopped :data:`GRACE_S` after
the signal ends as it would have without this module (Ray's own handler; on the driver,
Ray Train's abort of the run, which a SIGINT triggers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray
from ray.train.v2._internal.execution.callback import WorkerCallback

#: Seconds from the first SIGTERM to the fallback: a checkpoint has that long to be written.
#: SLURM's ``--signal=B:USR1@300`` leaves 300 s; a cloud's shutdown, 30 s (GCP) to 120 s (AWS).
GRACE_S = 120.0

#: Set in a process that was sent SIGTERM while a run's handler was in place.
STOP = threading.Event()
#: When this process got its SIGTERM (``time.monotonic``); None: not signalled.
SIGNALLED_AT: list[float | None] = [None]
#: Set once the loop has written the stop's checkpoint: the fallback is not needed.
DONE = threading.Event()
#: Set while a run trains in this process: a SIGTERM after it (Ray ending the worker actors at
#: the end of a run) goes straight to the handler that was there before.
ACTIVE = threading.Event()


def _install(on_timeout: Callable[[], None]) -> Callable[[], None]:
    """Install this process's SIGTERM handler (main thread only); returns the undo. The first
    signal sets :data:`STOP` and starts the watchdog that calls ``on_timeout`` after
    :data:`GRACE_S` unless :data:`DONE`; a second signal goes to the handler that was there
    before (Ray's: the process ends)."""
    previous = signal.getsignal(signal.SIGTERM)
    STOP.clear()
    DONE.clear()
    ACTIVE.set()
    SIGNALLED_AT[0] = None

    def pass_on(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def watchdog() -> None:
        if not DONE.wait(GRACE_S):
            print(f"[adasim] no checkpoint {GRACE_S:.0f} s after SIGTERM: stopping without",
                  flush=True)
            on_timeout()

    def handler(signum: int, frame: Any) -> None:
        if STOP.is_set() or not ACTIVE.is_set():
            pass_on(signum, frame)
            return
        SIGNALLED_AT[0] = time.monotonic()
        STOP.set()
        print("[adasim] SIGTERM: checkpointing at the end of this step, then stopping",
              flush=True)
        threading.Thread(target=watchdog, name="adasim-sigterm-watchdog", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


class SaveOnSigterm(WorkerCallback):
    """Ray Train worker callback: installs the SIGTERM handler in each Train worker process.
    ``after_init_train_context`` runs in the worker actor's main thread, the only thread that
    may set a signal handler (the training function runs in another)."""

    def after_init_train_context(self) -> None:
        if threading.current_thread() is threading.main_thread():
            _install(lambda: os.kill(os.getpid(), signal.SIGTERM))


@contextmanager
def driver_sigterm(board: ray.actor.ActorHandle) -> Iterator[None]:
    """While a run's ``fit`` runs in the driver: a SIGTERM asks the workers to stop through
    the plan board (and, in local mode, where the loop runs in this process, :data:`STOP`);
    after :data:`GRACE_S` without a stop, Ray Train aborts the run as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a Tune trial's thread: Tune's driver owns the signals
        return
    undo = _install(lambda: os.kill(os.getpid(), signal.SIGINT))
    stopper = threading.Thread(target=_tell_board, args=(board,), daemon=True,
                               name="adasim-sigterm-board")
    stopper.start()
    try:
        yield
    finally:
        DONE.set()
        undo()


def _tell_board(board: ray.actor.ActorHandle) -> None:
    # Not from the handler itself: a remote call there could wait on a lock that the
    # interrupted main thread holds.
    while not DONE.is_set():
        if STOP.wait(0.5):
            ray.get(board.request_stop.remote())
            return


def stop_requested(board: ray.actor.ActorHandle | None, pending: list[Any]) -> bool:
    """This rank's view: its own process was sent SIGTERM, or (rank 0, which holds the board)
    the driver asked. The board is polled without waiting: ``pending`` holds the call in
    flight, sent again once answered."""
    if STOP.is_set():
        return True
    if board is None:
        return False
    if not pending:
        pending.append(board.stop_requested.remote())
    ready, _ = ray.wait(pending, timeout=0)
    if not ready:
        return False
    return bool(ray.get(pending.pop()))


def finished() -> None:
    """The loop has written the stop's checkpoint: the watchdog stands down."""
    DONE.set()


def training_ended() -> None:
    """The training function has returned or raised in this process: a later SIGTERM is
    Ray's to handle (no checkpoint to take, no message, no watchdog keeping it alive)."""
    ACTIVE.clear()
    DONE.set()


def seconds_since_signal() -> float | None:
    """Seconds since this process got its SIGTERM, or None (the driver was signalled)."""
    at = SIGNALLED_AT[0]
    return None if at is None else time.monotonic() - at
