"""A Ray of several nodes on this machine (``ray.cluster_utils.Cluster``: a raylet per node,
each with its own CPUs and memory) that loses a node in the middle of a run: the driver
of ``tests/train/test_node_loss.py``, run in a process of its own (a Cluster cannot share
a process with the test session's local Ray).

``python tests/train/multinode.py SPEC.json`` where SPEC holds ``output`` (the storage
path), ``overrides`` (``--set`` items of the run), ``lose_at`` (the global step) and
optionally ``straight`` (false: no reference run here; the test session's Ray made one). It

1. starts a head of 0 CPUs (GCS, dashboard, the driver, Ray Train's controller: a cluster's
   head node) and three worker nodes of 1 CPU each, whose memory fits one cache shard each:
   the run's own placement (``resources/placement.py``: the workers first, then the shards in
   what they leave) puts its two Train workers and two shards on them, and one node is spare,
   as an autoscaler's ``min_workers`` keeps one;
2. runs the pretraining with ``ADASIM_FAULT=lose_node@STEP``: rank 0 records its node and
   waits, and this process removes a node that holds a Train worker and a shard (rank 0's if
   it holds one), the raylet and every process on it, by SIGKILL
   (``Cluster.remove_node(node, allow_graceful=False)``);
3. unless ``straight`` is false, runs the same config again, uninterrupted, on what is left
   (the reference);
4. prints one JSON line: the summaries, where the workers and shards were before the loss and
   once the run had recovered, which node went, and the timings.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any

#: Ray's own knobs for a small, quick cluster: a node's death is noticed after 3 missed
#: health checks 0.5 s apart (the defaults: 5 x 3 s); idle workers are kept (their start-up
#: is seconds on 2 cores); workers at the daemons' priority, as in ``start_local_ray``.
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "idle_worker_killing_time_threshold_ms": 10 * 60 * 1000,
    "worker_niceness": 0,
}


def actors_by_class() -> dict[str, list[dict[str, Any]]]:
    """The alive actors of the cluster, by class name: node id and restart count of each."""
    from ray.util.state import list_actors

    found: dict[str, list[dict[str, Any]]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, detail=True,
                             timeout=120):
        found.setdefault(actor.class_name, []).append(
            {"name": actor.name, "node": actor.node_id, "pid": actor.pid,
             "restarts": actor.num_restarts})
    return found


#: How long a node may take to register with the GCS. Ray waits 30 s, which a raylet on 2
#: loaded cores can miss (measured: at a load of 40, "The current node timed out during
#: startup"); the wait is Ray's ``services.get_node`` in a loop, lengthened here.
NODE_START_S = 180.0


def patient_node_start() -> None:
    """Let every node of this process's Cluster take up to :data:`NODE_START_S` to
    register."""
    import ray._private.services as services

    get_node = services.get_node

    def get(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + NODE_START_S
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    services.get_node = get


def free_port() -> int:
    """A port of 127.0.0.1 free now (Ray's default dashboard port may be another Ray's)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_fault(run_dir: str, deadline: float) -> dict[str, Any]:
    """The ``lose_node`` record of ``faults.jsonl`` once rank 0 has written it."""
    from adasim_ray.rundir.logs import fired

    while time.monotonic() < deadline:
        for entry in fired(run_dir):
            if entry["fault"] == "lose_node":
                return entry
        time.sleep(0.1)
    raise TimeoutError("rank 0 never reached the lose_node fault")


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from adasim_ray.config import load_config
    from adasim_ray.preflight import preflight
    from adasim_ray.resources.memory import shard_ram_bytes
    from adasim_ray.train.run import (
        HEALTH_CHECK_ENV,
        LOCAL_HEALTH_CHECK_S,
        PREEMPTION_WATCHER_ENV,
        pretrain,
    )

    cfg = load_config(None, spec["overrides"])
    # Every process of the cluster inherits this environment (Train's polling as a local
    # Ray's; no preemption watcher: these nodes get no cloud notice).
    os.environ[HEALTH_CHECK_ENV] = str(LOCAL_HEALTH_CHECK_S)
    os.environ[PREEMPTION_WATCHER_ENV] = "0"
    found = preflight(cfg)
    shard = shard_ram_bytes(cfg, len(found.source), found.feat_dim)
    worker_node = {"num_cpus": 1, "memory": int(1.5 * shard)}  # one shard each, not two
    patient_node_start()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "memory": shard // 2, "include_dashboard": True,
        "dashboard_port": free_port(), "_system_config": SYSTEM_CONFIG})
    for _ in range(3):  # two for the run, one spare (an autoscaler's min_workers)
        cluster.add_node(**worker_node)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # the driver joins it (train/run.init_ray)
    os.environ["ADASIM_FAULT"] = f"lose_node@{spec['lose_at']}"
    out: dict[str, Any] = {"shard_ram": shard}

    def lose_the_node() -> None:
        try:
            entry = wait_for_fault(os.path.join(spec["output"], "lost"),
                                   time.monotonic() + 600)
            out["before"] = where = actors_by_class()
            shards = {a["node"] for a in where.get("CacheShardActor", [])}
            workers = {a["node"] for a in where.get("RayTrainWorker", [])}
            # rank 0's node, or another that holds a Train worker and a shard
            pick = entry["node"] if entry["node"] in shards else min(shards & workers)
            [node] = [n for n in cluster.worker_nodes if n.node_id == pick]
            t0 = time.time()
            cluster.remove_node(node, allow_graceful=False)
            out["removed"] = {"node": pick, "time": t0, "took_s": time.time() - t0}
            # The restarted worker group's rank 0 records its resume once it has restored
            # the shards: the recovery time, and where everything is now.
            from adasim_ray.rundir.logs import RESUMES_LOG, read_jsonl

            resumed = os.path.join(spec["output"], "lost", RESUMES_LOG)
            while not read_jsonl(resumed):
                time.sleep(0.2)
            out["recovered_s"] = read_jsonl(resumed)[0]["time"] - t0
            out["after"] = actors_by_class()
        except Exception:  # noqa: BLE001 - said at once, and to the test in the JSON line
            out["remover_error"] = traceback.format_exc()
            print(out["remover_error"], file=sys.stderr, flush=True)

    remover = threading.Thread(target=lose_the_node, daemon=True)
    remover.start()
    t0 = time.perf_counter()
    out["lost"] = pretrain(cfg, spec["output"], run_name="lost", log_every=1000)
    out["lost_wall_s"] = time.perf_counter() - t0
    remover.join(timeout=60)
    os.environ.pop("ADASIM_FAULT")
    if spec.get("straight", True):
        t0 = time.perf_counter()
        out["straight"] = pretrain(cfg, spec["output"], run_name="straight", log_every=1000)
        out["straight_wall_s"] = time.perf_counter() - t0
    out["nodes_alive"] = sum(bool(n["Alive"]) for n in ray.nodes())
    ray.shutdown()
    cluster.shutdown()
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = main(json.load(f))
    print("RESULT " + json.dumps(result, default=str), flush=True)
