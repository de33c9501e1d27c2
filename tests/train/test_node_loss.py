"""A node lost in the middle of an epoch, on a Ray of several nodes on this machine
(``tests/train/multinode.py``: ``ray.cluster_utils.Cluster``, a raylet per node): the node
goes with a Train worker and a cache shard, its raylet and every process on it; the run
restores the lost shard from the newest checkpoint on another node, restarts the workers and
ends as an uninterrupted run of the same config does, each epoch logged once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adasim_ray.rundir.checkpoint import latest_checkpoint, read_checkpoint
from adasim_ray.rundir.logs import fired, resumes
from adasim_ray.rundir.metrics import MetricsLog
from tests.train.test_faults import assert_same_state
from tests.train.tiny import TWO_WORKERS

pytestmark = pytest.mark.ray  # a Ray of its own in a process of its own, and the session's

ROOT = Path(__file__).resolve().parents[2]
ITERS = 2  # 128 images in global batches of 64
LOSE_AT = ITERS + 1  # epoch 2, step 2: the checkpoint of epoch 1 is the newest


def test_a_node_lost_mid_epoch_is_survived_and_the_run_ends_as_an_uninterrupted_one(
    tmp_path, two_worker_run
):
    """The run of TWO_WORKERS (ray.max_failures at its default, 3) loses a node; the same
    config run uninterrupted on the session's Ray (``two_worker_run``) is the reference."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"output": str(tmp_path / "runs"), "overrides": TWO_WORKERS,
                                "lose_at": LOSE_AT, "straight": False}))
    # A process of its own: a Cluster cannot share this process with the session's Ray.
    proc = subprocess.run([sys.executable, "tests/train/multinode.py", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert "remover_error" not in out, out["remover_error"]

    check(out, two_worker_run["run_dir"])


def check(out: dict, straight_dir: str) -> None:
    """What ``multinode.py`` reports of the run that lost a node, against the reference."""
    # Before the loss, the run was spread as on a cluster: its two Train workers on two
    # nodes, its two cache shards on two nodes (one each: their memory), none on the head;
    # the node that went held a worker and a shard.
    before = out["before"]
    workers = [a["node"] for a in before["RayTrainWorker"]]
    shards = [a["node"] for a in before["CacheShardActor"]]
    assert len(set(workers)) == 2 and len(set(shards)) == 2
    lost = out["removed"]["node"]
    assert lost in workers and lost in shards
    # After it: the lost shard was restarted on the spare node and restored, the other one
    # kept its process; the workers ran on what was left.
    after = {a["name"]: a for a in out["after"]["CacheShardActor"]}
    assert sorted(a["restarts"] for a in after.values()) == [0, 1]
    assert all(a["node"] != lost for a in after.values())
    assert out["nodes_alive"] == 3  # the head and two worker nodes

    lost_dir = out["lost"]["run_dir"]
    [fault] = fired(lost_dir)
    assert (fault["fault"], fault["at"]) == ("lose_node", LOSE_AT)
    assert resumes(lost_dir) == [LOSE_AT // ITERS]  # one restart, from epoch 1's checkpoint
    assert resumes(straight_dir) == []
    got, want = MetricsLog(lost_dir).read(), MetricsLog(straight_dir).read()
    assert [r["epoch"] for r in got] == [1, 2, 3]  # each epoch once
    for a, b in zip(want, got, strict=True):
        for key in ("bootstrap_ratio", "nn_top1", "nn2_top1"):
            assert a[key] == b[key], (key, a["epoch"])
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["epoch"]
    assert got[-1]["knn_top1"] == want[-1]["knn_top1"]
    _, model_a, shards_a = read_checkpoint(latest_checkpoint(lost_dir))
    _, model_b, shards_b = read_checkpoint(latest_checkpoint(straight_dir))
    for name, tensor in model_b["model"].items():
        assert (model_a["model"][name].float() - tensor.float()).abs().max().item() < 1e-5, name
    for s, (a, b) in enumerate(zip(shards_a, shards_b, strict=True)):
        assert_same_state(a, b, f"shard {s}")
    print(f"node loss: removed in {out['removed']['took_s']:.1f} s, shards restored and "
          f"workers restarted {out['recovered_s']:.1f} s after it; the run took "
          f"{out['lost_wall_s']:.0f} s")
