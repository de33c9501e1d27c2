"""What idle processes that wake every 10 ms cost a training step that holds every core,
measured side by side in one run: the floor under ``step_overhead.py``'s Ray-vs-bare ratios
on a small machine.

Every Ray worker process (an actor, an idle pooled worker, a fetch task's process) runs a
timer on its main thread that checks for signals every 10 ms, whether it has work or not. A
local Ray Train run with one worker keeps ~15 of them (measured on 2 cores during
``step_overhead.py``'s baseline run: Ray Train's controller, its placement-group cleaner,
synchronisation, preemption-watcher and dataset-manager actors, Ray Data's stats and
autoscaling actors, the plan board, the cache shard, the fetch processes, idle workers, and the
Train worker itself). On a machine whose cores the step's OpenMP team holds, each wake takes a
core from one of the team's threads while the other waits for it at the next barrier.

The same bare step loop (``step_overhead.bare_loop``: the demo's backbone on views made
beforehand, allocator set as a Train worker's) runs in a fresh process of its own:

1. ``alone``: nothing else running (no Ray);
2. ``wakers``: beside ``--processes`` plain Python processes that only sleep 10 ms in a loop
   (no Ray: wake-ups and nothing else);
3. ``ray_no_actors``: beside a local Ray as adasim-ray starts it (its daemons and pooled
   workers), no actors;
4. ``ray_idle_actors``: the same Ray with ``--processes`` idle actors (``num_cpus=0``).

It also counts how often an idle actor's process wakes (its threads' voluntary context
switches over ``--sample-seconds``; Linux). The last line is one JSON object:
``alone_images_per_s``, ``wakers_images_per_s``, ``ray_no_actors_images_per_s``,
``ray_idle_actors_images_per_s``, their ``_ratio`` against ``alone`` (``wakers_ratio``,
``ray_no_actors_ratio``, ``ray_idle_actors_ratio``), ``idle_actor_wakes_per_s``
(all its threads) and ``idle_actor_main_thread_wakes_per_s``, ``processes``, ``rounds``
(figures are medians over rounds, each round running the four side by side).

    python benchmarks/idle_wakeups.py [--processes 14] [--rounds 3] [--bare-seconds 20]

On a machine with cores to spare the ratios should be ~1; on 2 cores they bound what a Ray
run can reach against a plain script (see the README's Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_overhead, when imported
from step_overhead import Rounds, in_fresh_process  # noqa: E402

#: Period of Ray's signal check on every worker process's main thread (core worker, 10 ms).
WAKE_PERIOD_S = 0.010


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=14,
                        help="idle processes beside the loop (a 1-worker local run keeps ~14 "
                        "besides its Train worker)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare-seconds", type=float, default=20.0)
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backbone", default="cnn_tiny_cpu")
    parser.add_argument("--cpus", type=int, default=2, help="threads of the bare loop")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 processes, 1 round, 2 s loops, digits fixture")
    args = parser.parse_args(argv)
    args.epochs = 3  # the schedules of step_overhead's model
    if args.quick:
        args.processes, args.rounds, args.bare_seconds, args.sample_seconds = 2, 1, 2.0, 0.5
        args.data, args.images = "digits", 512
    if args.processes < 1 or args.rounds < 1 or args.bare_seconds <= 0:
        parser.error("--processes and --rounds must be >= 1, --bare-seconds > 0")
    return args


def wakes_per_s(pid: int, seconds: float) -> tuple[float, float] | None:
    """(all threads, main thread) voluntary context switches a second of process ``pid``:
    each is one sleep, so one wake-up. None where /proc has no such counters."""

    def count() -> tuple[int, int]:
        total = main = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:  # the thread ended
                continue
            n = next(int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("voluntary_ctxt_switches"))
            total += n
            main += n if int(tid) == pid else 0
        return total, main

    if not Path(f"/proc/{pid}/task").is_dir():
        return None
    before, t0 = count(), time.perf_counter()
    time.sleep(seconds)
    after, dt = count(), time.perf_counter() - t0
    return (after[0] - before[0]) / dt, (after[1] - before[1]) / dt


def beside_sleepers(args: argparse.Namespace) -> float:
    """The loop's rate beside processes that only wake every :data:`WAKE_PERIOD_S`, as an
    idle Ray worker's main thread does."""
    code = f"import time\nwhile True:\n    time.sleep({WAKE_PERIOD_S})"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.processes)]
    try:
        time.sleep(1.0)  # past their start-up
        return in_fresh_process(args)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def beside_idle_actors(args: argparse.Namespace
                       ) -> tuple[float, float, tuple[float, float] | None]:
    """The loop's rate beside this process's Ray (a local one is started, and shut down after,
    if none is up) with no actors of ours, then with ``--processes`` idle actors; and one idle
    actor's wake-ups."""
    import ray

    from adasim_ray.train.run import start_local_ray

    started = not ray.is_initialized()
    if started:
        start_local_ray(num_cpus=args.cpus)
        time.sleep(2.0)  # past its start-up

    @ray.remote(num_cpus=0)
    class Idle:
        def pid(self) -> int:
            return os.getpid()

    actors = []
    try:
        bare_ray = in_fresh_process(args)
        actors = [Idle.remote() for _ in range(args.processes)]
        pids = ray.get([actor.pid.remote() for actor in actors])
        time.sleep(1.0)  # past their start-up
        wakes = wakes_per_s(pids[0], args.sample_seconds)
        return bare_ray, in_fresh_process(args), wakes
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def run_benchmark(args: argparse.Namespace) -> dict[str, object]:
    rounds = Rounds(args.rounds)
    record = rounds.record
    for _ in rounds:
        record("alone_images_per_s", in_fresh_process(args), "alone")
        record("wakers_images_per_s", beside_sleepers(args),
               f"beside {args.processes} processes waking every 10 ms")
        bare_ray, rate, wakes = beside_idle_actors(args)
        record("ray_no_actors_images_per_s", bare_ray, "beside a local Ray, no actors")
        record("ray_idle_actors_images_per_s", rate,
               f"beside a local Ray with {args.processes} idle actors")
        if wakes is not None:
            record("idle_actor_wakes_per_s", wakes[0], "an idle actor wakes", "/s")
            record("idle_actor_main_thread_wakes_per_s", wakes[1],
                   "its main thread wakes", "/s")

    result = rounds.medians()
    for key in ("wakers", "ray_no_actors", "ray_idle_actors"):
        result[f"{key}_ratio"] = (result[f"{key}_images_per_s"]
                                  / result["alone_images_per_s"])
    result.setdefault("idle_actor_wakes_per_s", None)
    result.setdefault("idle_actor_main_thread_wakes_per_s", None)
    result["processes"] = args.processes
    result["rounds"] = args.rounds
    return result


def main() -> None:
    result = run_benchmark(parse_args())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
