"""`launch.py check`: N, the memory of the bootstrapping state, resources, storage; one line per
problem and exit code 2 on bad input."""

from __future__ import annotations

import json
import os

import pytest

from adasim_ray.cli import default_config_path, main
from adasim_ray.config import load_config
from adasim_ray.data import open_source
from adasim_ray.engine import BootstrapConfig, BootstrapShard
from adasim_ray.engine.shard import shard_ranges
from adasim_ray.resources.memory import human_bytes


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch):
    """Judge this machine, whatever the shell that runs the tests points at."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _run(capsys, *argv: str) -> tuple[int, list[str], list[str], dict]:
    code = main(["check", *argv, "--json"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, lines[:-1], err.strip().splitlines(), json.loads(lines[-1])


def _engine_bytes(n: int, dim: int, shards: int, w: int, k: int, cache: str, sim: str) -> list:
    """What the engine really allocates: the shards of a run, built and measured."""
    cfg = BootstrapConfig(mode="adasim", tau=0.2, window=w, topk=k, cache_dtype=cache,
                          sim_dtype=sim)
    return [
        BootstrapShard(n, lo, hi, dim, cfg).nbytes()
        for lo, hi in shard_ranges(n, shards)
    ]


def test_default_config_reports_n_and_the_memory_per_shard(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    code, text, err, report = _run(capsys, "--output", str(out_dir))
    assert code == 0 and err == [] and report["ok"]
    # The embedded demo: MNIST cut to limit_images=3000, cnn_tiny_cpu (d = 128), w = 2, K = 5,
    # Z and the window's similarities in fp16, one shard.
    assert report["num_images"] == 3000
    assert any("3000 of 60000 images (stratified sample, seed 0), 10 classes, 28 px" in line
               and "views of 28 px" in line for line in text)
    n, d, w, k = 3000, 128, 2, 5
    expected = {
        "cache": n * d * 2,
        "written": n,
        "window": n * w * k * (4 + 2),
        "seen": n * w,
        "partners": n * 8,
    }
    mem = report["memory"]
    assert mem["feature_dim"] == d and mem["shards"] == 1
    assert {key: mem["per_shard"][key] for key in expected} == expected
    total = sum(expected.values())
    assert mem["per_shard"]["total"] == mem["all_shards"] == total == 981_000
    assert _engine_bytes(n, d, 1, w, k, "float16", "float16") == [total]
    assert any(human_bytes(total) in line and str(total) in line for line in text)
    fit = report["resources"][-1]
    assert fit["fits"] and fit["needed"] == {"CPU": 2.0, "GPU": 0.0}  # 1 worker x 2 CPUs
    assert report["storage"] == {"uri": str(out_dir), "writable": True}
    assert not out_dir.exists(), "the storage probe leaves nothing behind"


def test_sharded_fp32_cache_matches_the_engine(capsys, tmp_path):
    sets = ["ray.cache_shards=3", "adasim.cache_dtype=float32", "adasim.sim_dtype=float32"]
    argv = ["--data", "digits", "--output", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    code, _, _, report = _run(capsys, *argv)
    assert code == 0
    n = report["num_images"]
    assert n == len(open_source("digits", "train"))
    demo = load_config(default_config_path()).adasim  # w and K of the default config
    d = 128  # the demo backbone, cnn_tiny_cpu
    per_shard = _engine_bytes(n, d, 3, demo.window, demo.topk, "float32", "float32")
    assert report["memory"]["all_shards"] == sum(per_shard)
    assert report["memory"]["per_shard"]["total"] == max(per_shard)
    largest = max(hi - lo for lo, hi in shard_ranges(n, 3))
    assert report["memory"]["per_shard"]["cache"] == largest * d * 4


def test_missing_data_is_one_line_and_exit_2(capsys, tmp_path):
    missing = tmp_path / "no-imagenet"
    code, _, err, report = _run(capsys, "--data", f"folder:{missing}", "--output", str(tmp_path))
    assert code == 2 and not report["ok"]
    assert len(err) == 1 and err[0].startswith("error: data:") and str(missing) in err[0]
    assert report["problems"] == [err[0].removeprefix("error: ")]


def test_unwritable_storage_is_one_line_and_exit_2(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    storage = blocker / "runs"  # unwritable even for root: its parent is a file
    code, _, err, report = _run(
        capsys, "--data", "digits", "--set", f"ray.storage_path={storage}"
    )
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: storage:") and str(storage) in err[0]
    assert report["storage"] == {"uri": str(storage), "writable": False}


def test_a_run_too_big_for_this_machine_is_one_line_and_exit_2(capsys, tmp_path):
    workers = (os.cpu_count() or 1) + 1  # each asks for 2 CPUs: more than this machine has
    code, _, err, report = _run(
        capsys,
        "--data", "digits", "--output", str(tmp_path),
        "--set", f"ray.num_workers={workers}", "--set", f"batch_size={workers * 4}",
    )
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: resources:") and "Train worker" in err[0]
    assert report["resources"][-1]["fits"] is False


def test_bad_config_and_bad_cluster_yaml_are_one_line(capsys, tmp_path):
    assert main(["check", "--set", "adasim.tau=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adasim.tau" in err[0]
    broken = tmp_path / "cluster.yaml"
    broken.write_text("cluster_name: x\nprovider: {type: aws}\nmax_workers: nope\n")
    code = main(["check", "--data", "digits", "--output", str(tmp_path), "--cluster", str(broken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "max_workers" in err[0]


def test_cluster_yaml_is_judged_at_its_max_workers(capsys, tmp_path):
    code, text, _, report = _run(
        capsys, "--data", "digits", "--output", str(tmp_path), "--cluster", "cluster.yaml",
        "--set", "ray.num_workers=16", "--set", "ray.use_gpu=true", "--set", "batch_size=1024",
        "--set", "ray.cache_shard_gpus=0.25", "--set", "ray.cache_shards=4",
    )
    assert code == 0, text
    fit = report["resources"][-1]
    assert fit["available"] == {"CPU": 32 + 2 * 96, "GPU": 1 + 2 * 8}
    assert fit["needed"]["GPU"] == 17 and fit["fits"]


@pytest.mark.ray
def test_a_running_ray_is_asked_for_its_resources(capsys, tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    code, _, _, report = _run(
        capsys, "--data", "digits", "--output", str(tmp_path), "--set", f"ray.address={address}"
    )
    assert code == 0
    fit = report["resources"][-1]
    assert fit["where"] == f"the Ray cluster at {address}"
    assert fit["available"]["CPU"] == ray_session.cluster_resources()["CPU"]


@pytest.mark.parametrize("name, dim, shards", [("vits16", 384, 4), ("vitb16", 768, 5)])
def test_imagenet21k_on_paper_fits_its_cluster_with_the_recommended_shards(
        capsys, tmp_path, name, dim, shards):
    n = 14_197_122
    config = f"experiments/scale/imagenet21k_{name}_adasim.yaml"
    code, text, err, report = _run(
        capsys, "--config", config, "--cluster", "experiments/scale/cluster.yaml",
        "--num-images", str(n), "--set", f"ray.storage_path={tmp_path}")
    assert code == 0, err
    assert report["num_images"] == n and report["memory"]["feature_dim"] == dim
    figures = report["shards"]
    assert figures["count"] == figures["recommended"] == shards
    assert figures["largest_bytes"] <= 16e9 < report["memory"]["all_shards"] / (shards - 1)
    # the engine's own bytes per image, times the largest shard's images
    per_image = _engine_bytes(1000, dim, 1, 50, 10, "float16", "float16")[0] / 1000
    largest = max(hi - lo for lo, hi in shard_ranges(n, shards))
    assert figures["largest_bytes"] == pytest.approx(per_image * largest, rel=1e-6)
    assert report["shard_nodes"] == ["cache[0]"] * shards  # on the A10G node, not the A100s
    assert report["resources"][-1]["fits"]
    [query] = [line for line in text if "cache query per step" in line]
    assert "4096 anchors" in query and "not measured yet" in query
    assert figures["query_cpu_s_per_step"] > 1  # on CPUs this scale needs the GPU shards


def test_a_shard_over_the_budget_gets_a_recommendation(capsys, tmp_path):
    code, text, _, report = _run(
        capsys, "--data", "digits", "--output", str(tmp_path), "--shard-budget-gb", "0.0001",
        "--set", "adasim.window=4", "--set", "adasim.topk=8")
    assert code == 0
    need = report["shards"]["recommended"]
    assert need > 1 and any(f"use --set ray.cache_shards={need}" in line for line in text)


def test_the_query_block_is_counted_where_the_cache_lives(capsys, tmp_path):
    code, _, _, report = _run(capsys, "--data", "digits", "--output", str(tmp_path),
                              "--set", "batch_size=64")
    assert code == 0
    n = report["num_images"]
    block = report["shards"]["query_block_bytes"]
    assert block == 64 * min(n, 32768) * 4  # B x rows x float32, on the CPU here
    state = report["memory"]["per_shard"]["total"]
    assert report["shards"]["largest_ram_bytes"] == state + block
