"""The supervised-oracle configs: Table 1's two rows and the CPU-sized MNIST pair."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from adasim_ray.config import load_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize(("tag", "p"), [("p0", 0.0), ("p05", 0.5)])
def test_table1_rows_are_table2s_vits16_run_with_the_oracle(tag, p):
    path = EXPERIMENTS / "table1" / f"dino2_vits16_800ep_oracle_{tag}.yaml"
    cfg = load_config(path)
    assert (cfg.adasim.mode, cfg.adasim.oracle_p) == ("oracle", p)
    # Everything else is the plain DINO-2 ViT-S/16 row of Table 2 (same recipe and cluster).
    plain = load_config(EXPERIMENTS / "table2" / "dino2_vits16_800ep.yaml")
    assert dataclasses.replace(cfg, adasim=plain.adasim) == plain
    header = path.read_text()
    gpus = int(re.search(r"^# Assumes (\d+) GPUs", header, re.M).group(1))
    batch = int(re.search(r"global batch of (\d+)", header).group(1))
    assert (cfg.ray.num_workers, cfg.ray.use_gpu, cfg.batch_size) == (gpus, True, batch)
    assert f"p = {p:g}" in header


@pytest.mark.parametrize(("tag", "p"), [("p0", 0.0), ("p05", 0.5)])
def test_cpu_sized_oracle_pair(tag, p):
    cfg = load_config(EXPERIMENTS / f"mnist_dino_oracle_{tag}.yaml")
    assert (cfg.data, cfg.method, cfg.adasim.mode, cfg.adasim.oracle_p) == (
        "mnist",
        "dino",
        "oracle",
        p,
    )
    assert cfg.ray.num_workers == 1 and not cfg.ray.use_gpu
