"""The fidelity study's arithmetic (paired differences, intervals, verdicts, when to stop
adding seeds) and its GPU plan, which ``check`` validates; the study's runs themselves are
its own (benchmarks/fidelity.py, in sittings), not the suite's."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fidelity():
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fidelity"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_paired_difference_interval(fidelity):
    d = fidelity.Paired((1.0, 2.0, 3.0))
    assert d.mean == 2.0 and d.se == pytest.approx(1.0 / math.sqrt(3))
    low, high = d.ci95
    assert (low, high) == pytest.approx((2.0 - 4.303 / math.sqrt(3), 2.0 + 4.303 / math.sqrt(3)))
    assert fidelity.Paired((0.5,)).se == math.inf


def test_verdicts_follow_the_interval(fidelity):
    hurts = fidelity.Paired((-3.0, -2.5, -3.5, -2.0))
    assert fidelity.verdict(hurts, "negative") == "confirms"
    assert fidelity.verdict(hurts, "non-negative") == "refutes"
    noisy = fidelity.Paired((-1.0, 1.0, 0.2))
    assert fidelity.verdict(noisy, "negative") == "cannot tell"
    assert fidelity.verdict(fidelity.Paired((1.0, 1.2, 0.9)), "non-negative") == "confirms"


def test_seeds_are_added_until_every_difference_is_tight(fidelity):
    def run(knn: float) -> dict:
        return {"summary": {"final": {"knn_top1": knn}}}

    def runs_for(spread: float, seeds: int) -> dict:
        out = {}
        for s in range(seeds):
            for method, _ in fidelity.METHODS:
                out[method, "none", s] = run(0.90)
                out[method, "nn", s] = run(0.90 + (spread if s % 2 else -spread) / 100)
                out[method, "adasim", s] = run(0.91)
        return out

    assert not fidelity.enough(runs_for(0.1, 2), [0, 1], 0.7)  # three seeds at least
    assert fidelity.enough(runs_for(0.1, 3), [0, 1, 2], 0.7)
    assert not fidelity.enough(runs_for(3.0, 3), [0, 1, 2], 0.7)


def test_the_gpu_plan_passes_check_on_a_machine_without_a_gpu():
    out = subprocess.run(
        [sys.executable, "launch.py", "check", "--config", str(fidelity_plan()),
         "--num-images", "126689", "--cluster", "cluster.yaml"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[check] OK" in out.stdout and "vit_small_patch16_224" in out.stdout


def fidelity_plan() -> Path:
    return ROOT / "experiments" / "fidelity" / "imagenet100_vits16.yaml"


def test_a_finished_run_is_kept_as_a_record_that_outlives_its_run_directory(fidelity, tmp_path):
    import argparse
    import json
    import shutil

    args = argparse.Namespace(output=str(tmp_path / "out"), runs=None)
    run_dir = fidelity.run_dir_of(args, "dino-none-s0")
    run_dir.mkdir(parents=True)
    rows = [{"epoch": 1, "loss": 3.2, "bootstrap_ratio": 0.0},
            {"epoch": 2, "loss": 3.0, "bootstrap_ratio": 0.1}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"run_dir": str(run_dir), "final": {"knn_top1": 0.88}, "wall_s": 120.0}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert fidelity.finished(args, "dino-nn-s0") is None
    found = fidelity.finished(args, "dino-none-s0")
    assert found["summary"] == summary and [r["loss"] for r in found["rows"]] == [3.2, 3.0]
    shutil.rmtree(run_dir.parent)  # another checkout: only the committed record is there
    again = fidelity.finished(args, "dino-none-s0")
    assert again["summary"] == summary and again["rows"] == found["rows"]
    assert fidelity.knn_points(again) == pytest.approx(88.0)
