"""Experiment tracking (``train/tracking.py``): MLflow on a local SQLite store and W&B in
offline mode (no network), the logged values read back with MLflow's client and from W&B's
own run files; a resumed run goes on in the same tracked run and holds each step once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from adasim_ray.config import ConfigError, load_config
from adasim_ray.preflight import check_tracking
from adasim_ray.rundir.metrics import MetricsLog
from adasim_ray.train.tracking import TRACKING, start_tracking
from tests.wandb_records import history, offline_runs, run_info

TINY = ["data=digits", "limit_images=128", "batch_size=64", "adasim.window=1",
        "adasim.topk=3", "eval.max_train=200", "eval.max_test=60", "eval.linear=false",
        "eval.fewshot=false", "dino.out_dim=64", "dino.hidden_dim=64",
        "dino.bottleneck_dim=32", "dino.warmup_epochs=1", "ray.num_workers=0"]
ITERS = 2  # steps an epoch: 128 images, batches of 64


@pytest.mark.ray
def test_an_mlflow_store_of_a_run_resumed_once_holds_every_epoch_once(ray_session, tmp_path):
    """Epochs 1-3 logged, the checkpoint of epoch 2 the newest (``checkpoint_every=2``): the
    resumed run redoes epoch 3, which the tracked run already holds, then logs epoch 4."""
    from mlflow import MlflowClient

    from adasim_ray.train.run import pretrain

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config(None, [*TINY, "epochs=4", "checkpoint_every=2", "tracking=mlflow",
                             f"tracking_uri={uri}", "tracking_project=tiny"])
    first = pretrain(cfg, str(tmp_path / "runs"), log_every=1, stop_after=3)
    run_dir = first["run_dir"]
    record = json.loads((Path(run_dir) / TRACKING).read_text())
    assert record["logged"] == {"step": 3 * ITERS, "epoch": 3 * ITERS}
    pretrain(cfg, str(tmp_path / "runs"), log_every=1, resume=run_dir)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == record["run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["adasim.run_dir"] == run_dir
    assert run.data.params["tracking_project"] == "tiny"
    knn = client.get_metric_history(run.info.run_id, "epoch/knn_top1")
    assert sorted(m.step for m in knn) == [e * ITERS for e in (1, 2, 3, 4)]
    rows = MetricsLog(run_dir).read()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # epoch 3 redone in metrics.jsonl
    by_step = {m.step: m.value for m in knn}
    for row in (rows[0], rows[1], rows[3]):  # as logged (epoch 3: its first logging)
        assert by_step[row["epoch"] * ITERS] == pytest.approx(row["knn_top1"])
    loss = client.get_metric_history(run.info.run_id, "step/loss")
    assert sorted(m.step for m in loss) == list(range(1, 4 * ITERS + 1))  # each step once


def test_a_wandb_offline_run_continued_holds_each_step_once(tmp_path, monkeypatch):
    """Two sittings in one run directory: the second continues the first's W&B run, skips
    the steps it holds (epoch 2 redone from a checkpoint of epoch 1) and logs the rest."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    cfg = load_config(None, ["tracking=wandb", "tracking_project=tiny",
                             "tracking_group=sweep-a"])

    def epoch(tracker, e: int, value: float) -> None:
        for step in (2 * e - 1, 2 * e):
            tracker.log(step, {"step/loss": value + step, "step/lr": float("nan")})
        tracker.log(2 * e, {"epoch/knn_top1": value, "epoch/prefetched": True})
        tracker.sync()

    first = start_tracking(str(run_dir), cfg)
    epoch(first, 1, 0.5)
    epoch(first, 2, 0.6)
    first.close(failed=True)
    second = start_tracking(str(run_dir), cfg)
    assert second.record["run_id"] == first.record["run_id"]
    epoch(second, 2, 0.7)  # redone: the tracked run keeps its first logging
    epoch(second, 3, 0.8)
    second.close()

    files = offline_runs(run_dir / "wandb")
    assert len(files) == 2  # one offline directory per sitting, of the same run
    infos = [run_info(f) for f in files]
    assert infos[0] == infos[1] == {"id": first.record["run_id"], "project": "tiny",
                                    "group": "sweep-a"}
    rows = [row for f in files for row in history(f)]
    knn = [(step, row["epoch/knn_top1"]) for step, row in rows if "epoch/knn_top1" in row]
    assert knn == [(2, 0.5), (4, 0.6), (6, 0.8)]
    loss = [step for step, row in rows if "step/loss" in row]
    assert loss == [1, 2, 3, 4, 5, 6]
    assert not any("step/lr" in row or "epoch/prefetched" in row for _, row in rows)


def test_a_tracker_not_installed_is_one_line_naming_the_extra(monkeypatch):
    cfg = load_config(None, ["tracking=wandb"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python marks a package unimportable
    assert check_tracking(cfg) == ("tracking: wandb is not installed: "
                                   "pip install 'adasim-ray[wandb]'")


def test_mlflow_needs_a_store_named_by_an_absolute_path(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert check_tracking(load_config(None, ["tracking=mlflow"])).startswith(
        "tracking_uri: tracking: mlflow needs the tracking server or store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert check_tracking(load_config(None, ["tracking=mlflow"])) is None
    with pytest.raises(ConfigError, match="tracking_uri: 'sqlite:///mlflow.db' is a relative"):
        load_config(None, ["tracking=mlflow", "tracking_uri=sqlite:///mlflow.db"])


def test_an_mlflow_run_killed_between_epochs_is_continued_from_what_its_store_holds(tmp_path):
    """A sitting killed after steps that ``tracking.json`` never recorded (it is written at
    epoch ends): the tags logged with each batch say what the MLflow run holds."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config(None, ["tracking=mlflow", f"tracking_uri={uri}"])
    run_dir = str(tmp_path / "run-1")
    first = start_tracking(run_dir, cfg)
    for step in (1, 2, 3):  # killed in its second epoch: no sync, no close
        first.log(step, {"step/loss": float(step)})
    second = start_tracking(run_dir, cfg)
    assert second.record["run_id"] == first.record["run_id"]
    for step in (3, 4):
        second.log(step, {"step/loss": 10.0 * step})
    second.close()
    history = MlflowClient(tracking_uri=uri).get_metric_history(first.record["run_id"],
                                                                 "step/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                          (4, 40.0)]
    other = load_config(None, ["tracking=mlflow", f"tracking_uri=sqlite:///{tmp_path}/b.db"])
    assert start_tracking(run_dir, other).record["run_id"] != first.record["run_id"]
