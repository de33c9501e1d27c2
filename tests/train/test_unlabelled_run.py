"""A run on unlabelled images (sklearn's digits as a folder of loose PNGs): it trains,
bootstraps, logs what needs no labels and skips the k-NN, saying so in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from adasim_ray.config import load_config
from adasim_ray.rundir.metrics import MetricsLog


@pytest.mark.ray
def test_loose_images_train_and_skip_the_knn(ray_session, tmp_path, capsys):
    from adasim_ray.train.run import pretrain

    digits, images = load_digits(), tmp_path / "images"
    images.mkdir()
    for i, image in enumerate((digits.images[:160] * 255 / 16).astype(np.uint8)):
        Image.fromarray(image).save(images / f"{i:04d}.png")  # no class folders, no test/
    cfg = load_config(None, [
        f"data=folder:{images}", "backbone=cnn_tiny_cpu", "epochs=3", "batch_size=32",
        "adasim.window=1", "adasim.topk=3", "adasim.tau=0.5", "dino.out_dim=64",
        "dino.hidden_dim=64", "dino.bottleneck_dim=32", "dino.warmup_epochs=1",
        "ray.num_workers=0",
    ])
    summary = pretrain(cfg, str(tmp_path / "runs"), log_every=1000)
    out = capsys.readouterr().out
    assert out.count("k-NN skipped:") == 1 and "unlabelled" in out
    assert summary["evaluates"] is False and summary["epochs"] == 3
    rows = MetricsLog(summary["run_dir"]).read()
    assert all(r["knn_top1"] is None and r["nn_top1"] is None for r in rows)
    assert rows[0]["bootstrap_ratio"] == 0.0 and rows[0]["distinct_partners"] == 1.0
    assert rows[-1]["bootstrap_ratio"] > 0.0 and 0.0 < rows[-1]["distinct_partners"] <= 1.0
    assert all(r["feature_std"] > 0 and r["teacher_entropy"] > 0 for r in rows)
