"""A run on ``parquet:s3://...`` against a real S3 API on 127.0.0.1: the fetch processes read
the row groups from the bucket, and the k-NN evaluates on the bucket's test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from adasim_ray.config import load_config
from adasim_ray.data import convert_folder_to_parquet
from adasim_ray.train.rundir import MetricsLog


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
def test_a_run_trains_and_evaluates_on_parquet_in_a_bucket(ray_session, s3_server, tmp_path):
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
    summary = pretrain(cfg, str(tmp_path / "runs"), log_every=1000)
    rows = MetricsLog(summary["run_dir"]).read()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert 0.1 < rows[-1]["knn_top1"] <= 1.0  # 10 classes of 4 test images: above chance
