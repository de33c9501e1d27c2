"""The plan board: one small actor per run that holds the running epoch's number, its
partner plan and the position it starts at, where the fetch tasks of every rank read them;
and the driver's request to stop (``train/preemption.py``), which rank 0 reads.

Apart from the fetch's own module on purpose: an actor's process imports the module of its
class, and this one needs Ray only (no torch, seconds of start-up per process saved).
"""

from __future__ import annotations

import ray


class PlanBoard:
    """Holds the running epoch's number, its partner plan (an object ref, put once) and the
    first position of each rank's share that the epoch trains on (0, or where a checkpoint
    inside the epoch was taken)."""

    def __init__(self) -> None:
        self.epoch = -1
        self.plan: list[ray.ObjectRef] = []
        self.start = 0
        self.stop = False

    def publish(self, epoch: int, plan: list[ray.ObjectRef], start: int = 0) -> None:
        self.epoch, self.plan, self.start = epoch, plan, start

    def current(self) -> tuple[int, list[ray.ObjectRef], int]:
        return self.epoch, self.plan, self.start

    def request_stop(self) -> None:
        self.stop = True

    def stop_requested(self) -> bool:
        return self.stop


def plan_board_name(run_name: str) -> str:
    return f"adasim-plan-{run_name}"


def create_plan_board(run_name: str) -> ray.actor.ActorHandle:
    """The run's board, named after it (the existing one if there is one). It is not waited
    for here: the caller starts its other actors meanwhile and waits for all of them."""
    return (
        ray.remote(PlanBoard)
        .options(name=plan_board_name(run_name), get_if_exists=True, num_cpus=0, max_restarts=-1)
        .remote()
    )
