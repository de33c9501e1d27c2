"""Ray pretraining end to end on the digits data set (local Ray, 2 CPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from adasim_ray.config import load_config
from adasim_ray.rundir.metrics import MetricsLog

pytestmark = pytest.mark.ray

TINY = [
    "data=digits",
    "limit_images=320",
    "batch_size=64",
    "adasim.topk=4",
    "eval.max_train=400",
    "eval.max_test=120",
    "eval.linear=false",
    "eval.fewshot=false",
    "dino.out_dim=256",
    "dino.hidden_dim=128",
    "dino.bottleneck_dim=64",
    "dino.warmup_epochs=1",
]
KEYS = (
    "epoch",
    "loss",
    "knn_top1",
    "bootstrap_ratio",
    "nn_top1",
    "nn2_top1",
    "z_std",
    "lr",
    "images_per_s",
    "wall_s",
)


def run(tmp_path: Path, *overrides: str, **kwargs):
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, [*TINY, *overrides])
    return pretrain(cfg, str(tmp_path), log_every=1000, **kwargs)


def losses(summary) -> list[float]:
    return [row["loss"] for row in MetricsLog(summary["run_dir"]).read()]


def test_two_worker_ddp_run_bootstraps(two_worker_run):
    # tests/train/tiny.py TWO_WORKERS: 3 epochs, w=1, tau=1, the k-NN at epoch 3, a checkpoint
    # each epoch (tests/train/conftest.py runs it once; the node-loss test compares with it)
    summary = two_worker_run
    rows = MetricsLog(summary["run_dir"]).read()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(key in row for key in KEYS), row
    assert rows[0]["bootstrap_ratio"] == 0.0  # no window yet
    assert rows[2]["bootstrap_ratio"] > 0.0, "w=1, tau=1: epoch 3 must bootstrap"
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "config.yaml").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 3
    assert list(run_dir.glob("checkpoint_*")), "Ray Train kept no checkpoint"
    assert 0.0 <= rows[2]["knn_top1"] <= 1.0
    # The k-NN was spread over both ranks (each embedded half of the images): the same
    # figure as one process evaluating the final checkpoint's teacher on all of them.
    assert rows[2]["knn_top1"] == knn_of_checkpoint(run_dir)
    # A local Ray runs Ray Train without its preemption watcher (run.start_local_ray).
    from ray.util.state import list_actors

    this_ray = ray.get_runtime_context().gcs_address  # not a `ray start` left on the machine
    assert list_actors(address=this_ray,
                       filters=[("class_name", "=", "PreemptionWatcher")]) == []


def knn_of_checkpoint(run_dir: Path) -> float:
    from adasim_ray.config import config_from_dict
    from adasim_ray.configfile import read_yaml
    from adasim_ray.evaluation.protocol import evaluate_backbone
    from adasim_ray.recipe import build_model, make_views, open_eval_sources, open_train_source
    from adasim_ray.rundir.checkpoint import latest_checkpoint, read_checkpoint

    cfg = config_from_dict(read_yaml(run_dir / "config.yaml"))
    meta, state, _ = read_checkpoint(latest_checkpoint(run_dir), shards=False)
    views = make_views(cfg, open_train_source(cfg))
    model = build_model(cfg, views, int(meta["settings"]["num_images"]))
    model.load_state_dict(state["model"])
    memory, queries = open_eval_sources(cfg)
    return evaluate_backbone(model.eval_backbone(), memory, queries, views.eval_transform,
                             linear=False, fewshot=False, k=cfg.eval.knn_k,
                             T=cfg.eval.knn_temperature)["knn_top1"]


def test_resume_gives_the_uninterrupted_metrics(ray_session, tmp_path):
    common = ("epochs=3", "adasim.window=1", "adasim.tau=0.5", "ray.num_workers=0")
    straight = run(tmp_path / "a", *common)
    first = run(tmp_path / "b", *common, stop_after=2)
    assert len(MetricsLog(first["run_dir"]).read()) == 2
    resumed = run(tmp_path / "b", *common, resume=first["run_dir"])
    want = MetricsLog(straight["run_dir"]).read()
    got = MetricsLog(resumed["run_dir"]).read()
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(want, got, strict=True):
        for key in ("loss", "bootstrap_ratio", "nn_top1", "nn2_top1", "knn_top1", "z_std"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a["epoch"])


def test_tau_zero_gives_exactly_the_baseline_losses(ray_session, tmp_path):
    common = ("epochs=3", "adasim.window=1", "ray.num_workers=0", "eval.knn_every=0")
    adasim = run(tmp_path / "a", *common, "adasim.mode=adasim", "adasim.tau=0.0")
    plain = run(tmp_path / "b", *common, "adasim.mode=none")
    assert losses(adasim) == losses(plain)
    positive = run(tmp_path / "c", *common, "adasim.mode=adasim", "adasim.tau=2.0")
    assert losses(positive)[2] != losses(plain)[2], "tau > 0 should change epoch 3's pairs"


def test_resume_refuses_other_key_settings(ray_session, tmp_path):
    from adasim_ray.rundir.checkpoint import CheckpointError

    first = run(tmp_path, "epochs=2", "ray.num_workers=0", "eval.knn_every=0", stop_after=1)
    with pytest.raises(CheckpointError, match="window"):
        run(tmp_path, "epochs=2", "ray.num_workers=0", "adasim.window=3", resume=first["run_dir"])
    # The schedule and the data: more epochs, another batch, other images.
    for change, key in (("epochs=3", "epochs"), ("batch_size=32", "batch_size"),
                        ("limit_images=256", "num_images")):
        with pytest.raises(CheckpointError, match=f"{key}: checkpoint .*--force"):
            run(tmp_path, "epochs=2", "ray.num_workers=0", "eval.knn_every=0", change,
                resume=first["run_dir"])


def test_a_checkpoint_that_does_not_load_is_passed_over(ray_session, tmp_path, capsys):
    from adasim_ray.rundir.checkpoint import complete_checkpoints, read_meta
    from adasim_ray.rundir.logs import resumes

    common = ("epochs=3", "adasim.window=1", "ray.num_workers=0", "eval.knn_every=0")
    first = run(tmp_path, *common, stop_after=2)
    newest = complete_checkpoints(first["run_dir"])[0]
    [(shard, size)] = read_meta(newest)["shard_files"]
    (Path(first["run_dir"]) / shard).write_bytes(b"\0" * size)  # sizes right, content not
    resumed = run(tmp_path, *common, resume=first["run_dir"])
    assert "passing over a checkpoint that does not load" in capsys.readouterr().out
    assert resumes(resumed["run_dir"]) == [1]  # from epoch 1's checkpoint, not epoch 2's
    assert [r["epoch"] for r in MetricsLog(resumed["run_dir"]).read()] == [1, 2, 3]
