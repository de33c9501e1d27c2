"""A run on ``parquet:s3://...`` against a real S3 API on 127.0.0.1, its run directory in the
bucket too: the fetch processes read the row groups from the bucket, the k-NN evaluates on the
bucket's test split, and TensorBoard reads the run's events from the bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from adasim_ray.config import load_config
from adasim_ray.data import convert_folder_to_parquet
from adasim_ray.rundir.metrics import MetricsLog
from tests.tensorboard_events import tensorboard_events


def digits_folder(root: Path) -> Path:
    """sklearn's digits as a class-sorted folder of 8 px RGB PNGs: 12 train, 4 test a class."""
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    for digit in range(10):
        picks = np.flatnonzero(digits.target == digit)[:16]
        for k, i in enumerate(picks):
            split = "train" if k < 12 else "test"
            path = root / split / f"d{digit}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(images[i][:, :, None], 3, axis=2)).save(path)
    return root


@pytest.mark.ray
def test_a_run_trains_and_evaluates_on_parquet_in_a_bucket(ray_session, s3_server, tmp_path,
                                                             monkeypatch):
    from adasim_ray.train.run import pretrain

    shards = tmp_path / "pq"
    convert_folder_to_parquet(digits_folder(tmp_path / "digits"), shards, rows_per_shard=50)
    bucket = s3_server.bucket()
    s3_server.upload(shards, f"{bucket}/digits")
    cfg = load_config(None, [
        f"data=parquet:{s3_server.uri(bucket + '/digits')}", "epochs=2", "batch_size=40",
        "adasim.topk=4", "adasim.window=1", "adasim.tau=1.0", "eval.knn_k=5",
        "eval.linear=false", "eval.fewshot=false", "dino.out_dim=128", "dino.hidden_dim=64",
        "dino.bottleneck_dim=32", "dino.warmup_epochs=1", "ray.num_workers=0",
        "parquet_cache_mb=1",
    ])
    summary = pretrain(cfg, s3_server.uri(f"{bucket}/runs"), log_every=1)
    rows = MetricsLog(summary["run_dir"]).read()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert 0.1 < rows[-1]["knn_top1"] <= 1.0  # 10 classes of 4 test images: above chance
    # epoch 2's first views were made while epoch 1 was evaluated and checkpointed (to the
    # bucket: seconds, against a fraction of one for a batch of 40 digits)
    assert rows[1]["prefetched"] is True

    # TensorBoard, pointed at the bucket as a user would: every step's scalars, the epochs'
    # metrics at the global step of each epoch's end, Fig. 1 at each checkpoint.
    events = tensorboard_events(summary["run_dir"], s3_server.endpoint, monkeypatch)
    iters = 3  # 120 images in batches of 40
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, 2 * iters + 1))
    for key in ("step/lr", "step/teacher_temp", "step/momentum", "step/z_std"):
        assert len(events.Scalars(key)) == 2 * iters, key
    knn = events.Scalars("epoch/knn_top1")
    assert [(e.step, e.value) for e in knn] == [
        (iters * r["epoch"], pytest.approx(r["knn_top1"])) for r in rows]
    images = events.Images("neighbours")
    assert [e.step for e in images] == [iters, 2 * iters]
    assert images[0].width > 300 and images[0].height > 300

