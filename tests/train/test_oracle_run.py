"""The supervised oracle (``adasim.mode=oracle``) through the Ray layer, and its label check."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from adasim_ray.cli import main
from adasim_ray.config import load_config
from adasim_ray.data import open_source, stratified_sample
from adasim_ray.rundir.checkpoint import (
    complete_checkpoints,
    latest_checkpoint,
    read_checkpoint,
    read_meta,
)
from adasim_ray.rundir.metrics import MetricsLog

TINY = [
    "data=digits",
    "limit_images=320",
    "batch_size=64",
    "adasim.topk=4",
    "adasim.window=1",
    "eval.knn_every=0",
    "eval.max_train=400",
    "eval.max_test=120",
    "eval.linear=false",
    "eval.fewshot=false",
    "dino.out_dim=256",
    "dino.hidden_dim=128",
    "dino.bottleneck_dim=64",
    "dino.warmup_epochs=1",
    "ray.num_workers=0",
]


@pytest.mark.ray
def test_oracle_run_follows_the_schedule_and_pairs_within_classes(ray_session, tmp_path):
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, [*TINY, "epochs=3", "adasim.mode=oracle", "adasim.oracle_p=0.0"])
    summary = pretrain(cfg, str(tmp_path), log_every=1000)
    rows = MetricsLog(summary["run_dir"]).read()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # Standard-pair probability of epochs 1, 2, 3: linspace(1, 0, 3) = 1, 0.5, 0.
    assert rows[0]["bootstrap_ratio"] == 0.0
    assert 0.35 <= rows[1]["bootstrap_ratio"] <= 0.65  # 320 coin flips: > 3 sigma apart
    assert rows[2]["bootstrap_ratio"] == 1.0
    assert rows[2]["nn_top1"] == 1.0  # partners share the class
    assert 0.0 <= rows[2]["nn2_top1"] <= 1.0  # the window is filled as in the other modes
    assert all(np.isfinite(r["loss"]) for r in rows)

    # The shard actor wrote its own file into the run directory, which the checkpoint lists;
    # the folders of checkpoints no longer kept are gone.
    run_dir = Path(summary["run_dir"])
    checkpoints = [read_meta(c) for c in complete_checkpoints(run_dir)]
    assert [m["epoch"] for m in checkpoints] == [3, 2]
    assert not list(run_dir.glob("checkpoint_*/cache_shard_*.pt"))
    listed = {str(run_dir / p) for m in checkpoints for p, _ in m["shard_files"]}
    assert {str(p) for p in run_dir.glob("shards/*/cache_shard_*.pt")} == listed
    _, _, shards = read_checkpoint(latest_checkpoint(summary["run_dir"]))
    partners = np.concatenate([s["partners"].numpy() for s in shards])
    labels = open_source("digits", "train").labels[stratified_sample(
        open_source("digits", "train").labels, len(open_source("digits", "train")), 320, 0)]
    assert np.array_equal(labels[partners], labels)
    assert (partners != np.arange(320)).all()
    assert shards[0]["window"]["epochs_closed"] == 3


def test_oracle_on_unlabelled_data_fails_before_ray_in_one_line(tmp_path, capsys):
    rows = []
    for i in range(8):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(buffer, format="PNG")
        rows.append(buffer.getvalue())
    table = pa.table({"index": pa.array(range(8), pa.int64()), "image": pa.array(rows)})
    data = Path(tmp_path, "unlabelled")
    data.mkdir()
    pq.write_table(table, data / "part-0.parquet")
    code = main(
        [
            "pretrain",
            "--data",
            f"parquet:{data}",
            "--output",
            str(tmp_path / "runs"),
            "--set",
            "adasim.mode=oracle",
            "--set",
            "batch_size=4",
            "--set",
            "adasim.topk=2",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "adasim.mode" in err[0] and str(data) in err[0], err


def test_oracle_p_must_be_a_probability():
    from adasim_ray.config import ConfigError

    with pytest.raises(ConfigError, match=r"adasim\.oracle_p"):
        load_config(None, ["adasim.mode=oracle", "adasim.oracle_p=1.5"])
