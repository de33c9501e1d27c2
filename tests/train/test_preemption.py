"""Pre-emption on a real Ray run (local Ray, 2 CPUs): SIGTERM to the Train worker in epoch 2
of 3 (what a spot node's shutdown sends every process on it) ends the run with a checkpoint
inside that epoch, one line and exit code 3; the run resumed from it equals an uninterrupted
run (metrics, weights, cache). Checkpoints every 4 steps (``checkpoint_every_steps``) are taken
on the way. The driver's SIGTERM takes the same path through the plan board: the real SLURM
test (tests/test_slurm.py) sends it, and tests/train/test_sigterm_handler.py the handler."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adasim_ray.config import load_config
from adasim_ray.rundir.checkpoint import latest_checkpoint, read_checkpoint, read_meta
from adasim_ray.rundir.logs import fired, resumes
from adasim_ray.rundir.metrics import MetricsLog
from tests.train.test_faults import assert_same_state
from tests.train.tiny import set_args, tiny

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
ITERS = 6  # 96 images in batches of 16
RUN = tiny("limit_images=96", "batch_size=16", "checkpoint_every_steps=4", "eval.max_train=200",
           "dino.out_dim=64", "dino.hidden_dim=32", "dino.bottleneck_dim=16")
TERM_WORKER = ITERS + 2  # epoch 2, its step 3 (global steps from 0)


def stopped_inside(run_dir: str, epoch: int) -> dict:
    """The newest checkpoint's meta, checked to be one inside ``epoch`` (1-based)."""
    meta = read_meta(latest_checkpoint(run_dir))
    assert meta["epoch"] == epoch - 1 and 0 < meta.get("step", 0) < ITERS, meta
    return meta


def test_sigterm_checkpoints_inside_the_epoch_and_the_resume_matches(
    ray_session, tmp_path
):
    from adasim_ray.rundir.layout import join, list_dirs
    from adasim_ray.train.run import pretrain

    runs = str(tmp_path / "runs")
    env = os.environ | {
        "ADASIM_FAULT": f"term_worker@{TERM_WORKER}",
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
    }
    args = [sys.executable, "launch.py", "pretrain", "--output", runs, *set_args(RUN)]
    driver = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    out = driver.stdout[-3000:] + driver.stderr[-3000:]
    # The worker's SIGTERM: a checkpoint inside epoch 2, then one line and exit code 3.
    assert driver.returncode == 3, out
    [run_dir] = list_dirs(runs, "")
    assert "stopped on SIGTERM in epoch 2 of 3" in driver.stderr, out
    assert f"pretrain --resume {run_dir}" in driver.stderr.strip().splitlines()[-1], out
    meta = stopped_inside(run_dir, 2)
    signalled = fired(run_dir)[0]["time"]
    written = Path(latest_checkpoint(run_dir), "meta.json").stat().st_mtime
    print(f"SIGTERM to the worker -> checkpoint of step {meta['step']} written: "
          f"{written - signalled:.2f} s")
    assert written - signalled < 30
    assert len(MetricsLog(run_dir).read()) == 1

    cfg = load_config(join(run_dir, "config.yaml"))
    resumed = pretrain(cfg, resume=run_dir, log_every=1000)
    assert [f["fault"] for f in fired(run_dir)] == ["term_worker"]
    assert resumes(run_dir) == [1]
    assert json.loads(Path(run_dir, "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 3

    # The uninterrupted run in local mode, as in test_faults.
    local = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, num_workers=0))
    straight = pretrain(local, str(tmp_path / "straight"), log_every=1000)
    got, want = MetricsLog(resumed["run_dir"]).read(), MetricsLog(straight["run_dir"]).read()
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(want, got, strict=True):
        for key in ("bootstrap_ratio", "nn_top1", "nn2_top1", "distinct_partners"):
            assert a[key] == b[key], (key, a["epoch"])
        for key in ("loss", "z_std"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a["epoch"])
    print("largest loss difference:",
          max(abs(a["loss"] - b["loss"]) for a, b in zip(want, got, strict=True)))
    _, model_a, [shard_a] = read_checkpoint(latest_checkpoint(resumed["run_dir"]))
    _, model_b, [shard_b] = read_checkpoint(latest_checkpoint(straight["run_dir"]))
    worst = max((model_a["model"][name].float() - tensor.float()).abs().max().item()
                for name, tensor in model_b["model"].items())
    print("largest weight difference:", worst)
    assert worst < 1e-5
    assert_same_state(shard_a, shard_b, "shard")
    # The checkpoints inside an epoch go once the epoch's own is saved.
    assert not [p for p in list_dirs(run_dir, "checkpoint_epoch_") if "_step_" in p]
