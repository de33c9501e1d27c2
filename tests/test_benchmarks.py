"""The benchmarks run (smoke test at a small N); their figures are not asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES_OF_GPU_CHECK = ("env", "engine", "query", "step", "ddp", "ray")


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


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


#: A sitecustomize that makes ``import ray`` and ``import optuna`` fail, as on a GPU machine
#: that has neither (in every process started with it on PYTHONPATH).
_NO_RAY_NO_OPTUNA = """
import sys

class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "optuna"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def _gpu_check(args: list[str], tmp_path: Path, timeout: float = 900
               ) -> subprocess.CompletedProcess:
    """benchmarks/gpu_check.py in a process where Ray and optuna do not import."""
    (tmp_path / "sitecustomize.py").write_text(_NO_RAY_NO_OPTUNA)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_gpu_check_quick_runs_every_phase_without_ray_or_optuna(tmp_path):
    """``--quick`` on the CPU with Ray and optuna unimportable: one line per phase as it ends,
    the ray phase skipped with a line, the last line all phases; the engine's device path
    (here the CPU again) agrees with the CPU's, the one-rank process group gathers."""
    done = _gpu_check(["--quick"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _lines(done.stdout)
    assert [line["phase"] for line in lines[:-1]] == ["env", "engine", "query", "step", "ddp",
                                                      "ray"]
    last = lines[-1]
    assert set(last) >= {"env", "engine", "query", "step", "ddp", "ray", "wall_s"}
    assert (last["env"]["ray"], last["env"]["optuna"]) == ("absent", "absent")
    assert "Ray does not import" in last["ray"]["skipped"]
    engine = last["engine"]
    assert engine["engine_ids_equal"] and engine["engine_window_equal"]
    assert engine["engine_plan_equal"] and engine["mixed_topk_equal_rows"] > 0
    query = last["query"]
    assert all(query[f"d16_b8_{how}_recall"] > 0.9 for how in ("mixed", "upcast"))
    step = last["step"]
    assert step["cnn_tiny_cpu_fp32_images_per_s"] > 0
    assert step["cnn_tiny_cpu_fp32_with_cache_images_per_s"] > 0
    ddp = last["ddp"]
    assert ddp["frozen_grads_none"] and ddp["other_grads_present"]
    assert ddp["all_gather_ok"] and ddp["gather_ok"]
    assert not any("error" in phase for phase in last.values() if isinstance(phase, dict))


def test_gpu_check_keeps_to_its_budget(tmp_path):
    """Phases that would not end before ``--budget-s`` are skipped with a line; the check
    ends inside the budget (the process's start-up before the script's first line aside)."""
    start = time.monotonic()
    done = _gpu_check(["--quick", "--budget-s", "25"], tmp_path, timeout=120)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _lines(done.stdout)
    last = lines[-1]
    assert last["wall_s"] <= 25 and wall < 25 + 10
    skipped = [line["phase"] for line in lines[:-1] if "skipped" in line]
    # 10 s of grace and the phases' own needs leave room for the first one or two
    assert "ddp" in skipped and "ray" in skipped
    assert len(lines) == len(PHASES_OF_GPU_CHECK) + 1


def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    if torch_cuda_available():
        pytest.skip("this machine has a GPU")
    done = _gpu_check([], tmp_path, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "needs a CUDA GPU" in done.stderr


@pytest.mark.ray
def test_gpu_check_quick_ray_phase_resumes_a_run_on_the_cpu(ray_session):
    """The ray phase of ``gpu_check.py --quick`` on the test session's Ray: a run stopped after
    one epoch and resumed, the bare loop of the same step, ``ray_vs_bare``."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    result = gpu_check.run_check(gpu_check.parse_args(["--quick", "--phases", "ray"]))
    json.dumps(result)  # the last line of the script
    ray_phase = result["ray"]
    assert "error" not in ray_phase and "skipped" not in ray_phase, ray_phase
    assert ray_phase["resumed_ok"] is True
    for key in ("ray_images_per_s", "bare_images_per_s", "ray_vs_bare", "cache_share"):
        assert ray_phase[key] > 0, key


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


def test_audit_recall_quick_measures_both_rankings(ray_session, tmp_path):
    """benchmarks/audit_recall.py on 300 digits with 5 flips and 5 duplicates, 1 epoch; its
    pretraining joins the test session's Ray (RAY_ADDRESS) rather than starting one."""
    env = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audit_recall.py"), "--quick",
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600, env=env,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["train_images"] == 305 and result["epochs"] == 1
    assert 0.5 < result["knn_top1"] <= 1.0
    for ranking in ("neighbours", "confident"):
        found = result[ranking]
        assert 0 <= found["flips_found"] <= 5 and found["flips_share"] == found["flips_found"] / 5
        assert found["duplicates_found"] == 5  # exact copies: identical exact features
    assert "flips in top 10" in out
