"""The paper's runs as configs: Table 2 (experiments/table2/) and Table 3's few-shot transfer
(experiments/table3/), checked against the paper's hyper-parameters and against the clusters."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from adasim_ray.backbones import PAPER_BACKBONES
from adasim_ray.config import load_config
from adasim_ray.data import parse_spec
from adasim_ray.evaluation.fewshot import few_shot
from adasim_ray.resources.cluster_yaml import cluster_yaml_nodes
from adasim_ray.resources.placement import place, run_bundles

ROOT = Path(__file__).resolve().parents[1]
TABLE2 = ROOT / "experiments" / "table2"

# Table 2's blocks: (method, backbone, epochs, AdaSim's (tau, w, K)); Section 4.5: the
# 100-epoch blocks use w = 1, the 800-epoch ones (0.2, 50, 10).
BLOCKS = {
    "simsiam_r50_100ep": ("simsiam", "resnet50", 100, (0.2, 1, 10)),
    "dino2_r50_100ep": ("dino", "resnet50", 100, (0.2, 1, 10)),
    "dino2_vits16_800ep": ("dino", "vit_small_patch16_224", 800, (0.2, 50, 10)),
    "dino2_vitb16_800ep": ("dino", "vit_base_patch16_224", 800, (0.2, 50, 10)),
}
MODES = {"": "none", "_nn": "nn", "_adasim": "adasim"}


def test_table2_has_one_config_per_row():
    expected = {f"{block}{suffix}.yaml" for block in BLOCKS for suffix in MODES}
    assert {p.name for p in TABLE2.glob("*.yaml")} == expected


@pytest.mark.parametrize(
    ("block", "suffix"), [(b, s) for b in BLOCKS for s in MODES], ids=lambda x: x or "plain"
)
def test_table2_row_has_the_papers_settings(block, suffix):
    path = TABLE2 / f"{block}{suffix}.yaml"
    cfg = load_config(path)
    method, backbone, epochs, (tau, window, topk) = BLOCKS[block]
    assert (cfg.method, cfg.backbone, cfg.epochs) == (method, backbone, epochs)
    assert cfg.backbone in PAPER_BACKBONES
    assert cfg.adasim.mode == MODES[suffix]
    if cfg.adasim.mode == "adasim":
        assert (cfg.adasim.tau, cfg.adasim.window, cfg.adasim.topk) == (tau, window, topk)
    assert cfg.adasim.topk == 10  # + NN needs K >= 2: its partner is never the image itself
    assert parse_spec(cfg.data) == ("folder", "/mnt/imagenet")
    assert cfg.augment.crop_scale == ((0.2, 1.0) if method == "simsiam" else (0.25, 1.0))
    # The header comment states the GPUs and the global batch, and the fields say the same.
    header = path.read_text()
    gpus = int(re.search(r"^# Assumes (\d+) GPUs", header, re.M).group(1))
    batch = int(re.search(r"global batch of (\d+)", header).group(1))
    assert (cfg.ray.num_workers, cfg.ray.use_gpu, cfg.batch_size) == (gpus, True, batch)
    assert cfg.batch_size // gpus == 64  # the authors' (DINO's, SimSiam's) batch per GPU


@pytest.mark.parametrize("cluster", ["cluster.yaml", "experiments/clusters/gcp.yaml"])
def test_every_table2_run_fits_the_clusters(cluster):
    nodes = cluster_yaml_nodes(ROOT / cluster)
    for path in sorted(TABLE2.glob("*.yaml")):
        cfg = load_config(path)
        assert place(nodes, run_bundles(cfg)) == [], f"{path.name} does not fit {cluster}"
    too_big = load_config(TABLE2 / "dino2_vitb16_800ep.yaml", ["ray.num_workers=32"])
    assert place(nodes, run_bundles(too_big)), "the placement must be able to fail"


def _table3() -> dict:
    return yaml.safe_load((ROOT / "experiments" / "table3" / "fewshot_transfer.yaml").read_text())


def test_table3_protocol_is_the_evaluation_default():
    defaults = {
        name: p.default
        for name, p in inspect.signature(few_shot).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    protocol = _table3()["protocol"]
    assert protocol == {k: defaults[k] for k in ("ways", "shots", "queries", "episodes")}
    assert protocol == {"ways": 5, "shots": 5, "queries": 15, "episodes": 600}  # Section 4.2


def test_table3_rows_evaluate_table2_runs_on_its_eight_data_sets():
    table = _table3()
    datasets = table["datasets"]
    assert len(datasets) == 8
    for spec in datasets.values():
        assert parse_spec(spec).kind == "folder"
    rows = table["rows"]
    assert len(rows) == 9  # three blocks of Table 3: plain, + NN, + AdaSim
    for row in rows:
        load_config(ROOT / row["pretrain"])
        if row["paper"] is None:  # "-": the pretraining does not converge
            assert "+ NN" in row["row"] and "DINO-2" in row["row"]
            continue
        scores = [row["paper"][name] for name in datasets]
        assert abs(sum(scores) / len(scores) - row["paper"]["avg"]) < 0.006, row["row"]


def test_the_scale_cluster_is_a_valid_ray_up_file_of_8_nodes_of_8_gpus():
    nodes = cluster_yaml_nodes(ROOT / "experiments" / "scale" / "cluster.yaml")  # Ray's schema
    a100 = [n for n in nodes if "A100" in n.accelerators]
    assert len(a100) == 8 and all(n.gpus == 8 for n in a100)
    for name in ("vits16", "vitb16"):
        cfg = load_config(ROOT / "experiments" / "scale" / f"imagenet21k_{name}_adasim.yaml")
        assert cfg.ray.num_workers == 64 and cfg.batch_size // 64 == 64
        assert parse_spec(cfg.data)[0] == "parquet"
        assert place(nodes, run_bundles(cfg)) == []
