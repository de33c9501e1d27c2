"""The benchmarks run (smoke test at a small N); their figures are not asserted here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cache_query_quick_prints_the_json_keys():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cache_query.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for key in (
        "query_s",
        "faiss_s",
        "ratio_vs_faiss",
        "matmul_fraction",
        "plan_s",
        "plan_peak_ratio",
        "bytes_per_image",
    ):
        assert key in result and result[key] > 0, key
    assert result["sharded_equals_whole"] is True
    assert result["ids_agree_with_faiss"] > 0.99


@pytest.mark.ray
def test_gpu_check_quick_runs_the_whole_check_on_the_cpu(ray_session):
    """The GPU check's every part on the CPU (a small ConvNet at 32 px), on the test
    session's Ray: the engine compared across devices, a run stopped after one epoch and
    resumed, the bare loop. (``gpu_check.py --quick`` runs the same with a Ray of its own.)"""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    result = gpu_check.run_check(gpu_check.parse_args(["--quick"]))
    json.dumps(result)  # the last line of the script
    assert result["device"] == "cpu"
    assert result["engine_ids_equal"] and result["engine_window_equal"]
    assert result["engine_plan_equal"] and result["engine_tied_rows"] > 0
    assert result["cnn_tiny_cpu_resumed_ok"] is True
    for key in ("ray_images_per_s", "bare_images_per_s", "ray_vs_bare", "cache_share"):
        assert result[f"cnn_tiny_cpu_{key}"] > 0, key


def test_pipeline_quick_measures_both_loaders_on_folder_and_parquet():
    """benchmarks/pipeline.py end to end at 64 px: both formats, both loaders, the keys."""
    spec = importlib.util.spec_from_file_location("pipeline", ROOT / "benchmarks" / "pipeline.py")
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    result = pipeline.run_benchmark(pipeline.parse_args(["--quick"]))
    json.dumps(result)
    for figures in (result, *result["by_format"].values()):
        assert figures["views_per_core"] > 0 and figures["reference_views_per_core"] > 0
        assert figures["ratio"] == pytest.approx(
            figures["views_per_core"] / figures["reference_views_per_core"], rel=0.01)
        assert figures["bytes_per_view"] == 3 * 64 * 64  # uint8 out of the fetch
    assert set(result["by_format"]) == {"folder", "parquet"}


def test_parquet_access_quick_runs_every_reader_and_prints_the_keys():
    """benchmarks/parquet_access.py end to end on 120 JPEGs: each reader in its own process."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "parquet_access.py"),
                          "--quick"], check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("parquet_images_per_s", "folder_images_per_s", "in_memory_images_per_s",
                "parquet_row_groups_images_per_s", "parquet_bytes_per_s",
                "folder_bytes_per_s"):
        assert result[key] > 0, key
    assert 0 < result["peak_rss_mb"] < 4096
    assert result["target_met"] == (
        result["parquet_images_per_s"] >= result["folder_images_per_s"]
        and result["parquet_bytes_per_s"] >= result["folder_bytes_per_s"]
        and result["peak_rss_mb"] < 1024)


@pytest.mark.ray
def test_idle_wakeups_quick_measures_the_four_loops_and_an_idle_actors_wakes(ray_session):
    """benchmarks/idle_wakeups.py on the test session's Ray: the loop alone, beside sleeping
    processes, beside Ray, beside idle actors; an idle actor's main thread wakes on Ray's
    10 ms timer (the benchmark's premise: if Ray stops waking idle workers, this says so)."""
    spec = importlib.util.spec_from_file_location("idle_wakeups",
                                                  ROOT / "benchmarks" / "idle_wakeups.py")
    idle_wakeups = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(idle_wakeups)
    result = idle_wakeups.run_benchmark(idle_wakeups.parse_args(["--quick"]))
    json.dumps(result)
    for key in ("alone", "wakers", "ray_no_actors", "ray_idle_actors"):
        assert result[f"{key}_images_per_s"] > 0, key
    assert result["wakers_ratio"] == pytest.approx(
        result["wakers_images_per_s"] / result["alone_images_per_s"])
    assert result["idle_actor_main_thread_wakes_per_s"] > 20
    assert result["idle_actor_wakes_per_s"] >= result["idle_actor_main_thread_wakes_per_s"]
    assert result["processes"] == 2 and result["rounds"] == 1
