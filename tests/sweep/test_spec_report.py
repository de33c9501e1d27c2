"""Sweep files and the results table, without Ray."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from adasim_ray.cli import main
from adasim_ray.config import ConfigError
from adasim_ray.sweep.spec import load_sweep
from adasim_ray.sweep.tuner import concurrent_trials, trial_resources

ROOT = Path(__file__).resolve().parents[2]


def test_the_papers_table4_grid_is_one_factor_at_a_time():
    sweep = load_sweep(ROOT / "experiments" / "table4" / "dino2_vits16_ablation.yaml")
    points = sweep.points()
    # centre + 4 other tau + 2 other w + 4 other K
    assert len(points) == 11
    assert points[0] == {"adasim.tau": 0.2, "adasim.window": 10, "adasim.topk": 3}
    centre = points[0]
    for point in points[1:]:
        assert sum(point[k] != centre[k] for k in centre) == 1
    taus = sorted({p["adasim.tau"] for p in points})
    assert taus == [0.0, 0.05, 0.1, 0.2, 0.4]
    assert sweep.trial_config(points[3]).backbone == "vit_small_patch16_224"


def test_full_product_and_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(ROOT / "experiments" / "digits_smoke.yaml"),
                "search": {
                    "one_factor_at_a_time": False,
                    "factors": {"adasim.tau": [0.0, 0.3], "adasim.topk": [2, 3, 4]},
                },
            }
        )
    )
    sweep = load_sweep(path, ["epochs=7"])
    assert len(sweep.points()) == 6
    assert {(p["adasim.tau"], p["adasim.topk"]) for p in sweep.points()} == {
        (t, k) for t in (0.0, 0.3) for k in (2, 3, 4)
    }
    assert sweep.trial_config(sweep.points()[-1]).epochs == 7


@pytest.mark.parametrize(
    ("search", "extra", "needle"),
    [
        ({"factors": {"adasim.nope": [1]}, "center": {"adasim.nope": 1}}, {}, "adasim.nope"),
        ({"factors": {"adasim.tau": [0.1]}}, {}, "search.center"),
        ({"factors": {"adasim.tau": []}, "center": {"adasim.tau": 0.1}}, {}, "non-empty"),
        ({"algorithm": "optuna", "space": {"adasim.tau": {"gauss": [0, 1]}}}, {}, "gauss"),
        ({"algorithm": "optuna", "space": {"adasim.tau": {"uniform": [1, 0]}}}, {}, "low"),
        ({"algorithm": "bayes"}, {}, "search.algorithm"),
        (
            {"factors": {"adasim.tau": [0.1]}, "center": {"adasim.tau": 0.2}},
            {"scheduler": {"asha": True}, "pretrain": {"eval": {"knn_every": 2}}},
            "knn_every",
        ),
        ({"factors": {"adasim.tau": [0.1]}, "center": {"adasim.tau": 0.2}},
         {"max_concurrent_trials": 0}, "max_concurrent_trials"),
    ],
)
def test_bad_sweep_files_name_the_field(tmp_path, search, extra, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"search": search, **extra}))
    with pytest.raises(ConfigError, match=needle):
        load_sweep(path)


def test_sweep_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["sweep"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sweep directory" in err[0]
    assert main(["report", str(tmp_path)]) == 2


def test_concurrency_from_what_a_trial_reserves():
    sweep = load_sweep(ROOT / "experiments" / "mnist_ablation.yaml")
    need = trial_resources(sweep.trial_config({}))
    assert need == {"CPU": 2.0, "GPU": 0.0}  # the demo's one worker holds both cores
    assert concurrent_trials(need, {"CPU": 2.0, "GPU": 0.0}) == 1
    assert concurrent_trials(need, {"CPU": 9.0, "GPU": 0.0}) == 4
    assert concurrent_trials(need, {"CPU": 1.0, "GPU": 0.0}) == 0
    gpu = {"CPU": 8.0, "GPU": 2.0}
    assert concurrent_trials(gpu, {"CPU": 64.0, "GPU": 8.0}) == 4


def _fake_trial(root: Path, name: str, tau: float, knn: list[float | None], done: bool) -> None:
    trial = root / "trials" / name
    trial.mkdir(parents=True)
    cfg = yaml.safe_load((root / "base.yaml").read_text())
    cfg["adasim"]["tau"] = tau
    (trial / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        {"epoch": e + 1, "knn_top1": k, "bootstrap_ratio": 0.1 * (e + 1)}
        for e, k in enumerate(knn)
    ]
    (trial / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if done:
        (trial / "summary.json").write_text("{}")


def test_report_one_row_per_trial_with_the_best_setting(tmp_path):
    sweep_file = ROOT / "experiments" / "digits_sweep_smoke.yaml"
    (tmp_path / "sweep.yaml").write_text(
        sweep_file.read_text().replace("base: digits_smoke.yaml",
                                       f"base: {ROOT / 'experiments' / 'digits_smoke.yaml'}")
    )
    base = load_sweep(sweep_file).base
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    _fake_trial(tmp_path, "t_00000", 0.2, [0.5, 0.6], True)
    _fake_trial(tmp_path, "t_00001", 0.0, [0.55, 0.7], True)
    _fake_trial(tmp_path, "t_00002", 0.5, [0.4], False)
    err = tmp_path / "trials" / "t_00003"
    err.mkdir()
    (err / "error.txt").write_text("adasim.tau: must be >= 0, got -1.0\n")
    (err / "point.json").write_text(json.dumps({"adasim.tau": -1.0}))

    assert main(["report", str(tmp_path), "--json"]) == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["trial"] for r in rows] == ["t_00000", "t_00001", "t_00002", "t_00003"]
    assert [r["status"] for r in rows] == ["done", "done", "stopped after 1/2 epochs", "error"]
    assert float(rows[1]["knn_top1"]) == 0.7 and float(rows[1]["adasim.tau"]) == 0.0
    assert "must be >= 0" in rows[3]["error"]
    md = (tmp_path / "results.md").read_text()
    assert "Best setting: tau = 0.0000 (k-NN top-1 0.7000, t_00001)" in md
    assert md.count("| t_0000") == 4
    assert (tmp_path / "knn_vs_factors.png").stat().st_size > 5000


def test_report_reads_trials_on_the_bases_object_storage(tmp_path, s3_server):
    import shutil

    sweep_dir = tmp_path / "sweep-x"
    sweep_dir.mkdir()
    sweep_file = ROOT / "experiments" / "digits_sweep_smoke.yaml"
    (sweep_dir / "sweep.yaml").write_text(
        sweep_file.read_text().replace("base: digits_smoke.yaml",
                                       f"base: {ROOT / 'experiments' / 'digits_smoke.yaml'}")
    )
    storage = s3_server.uri(f"{s3_server.bucket()}/paper")
    base = load_sweep(sweep_file).base
    base.setdefault("ray", {})["storage_path"] = storage
    (sweep_dir / "base.yaml").write_text(yaml.safe_dump(base))
    _fake_trial(sweep_dir, "t_00000", 0.2, [0.5, 0.6], True)
    _fake_trial(sweep_dir, "t_00001", 0.0, [0.7], False)
    s3_server.upload(sweep_dir / "trials", f"{storage[5:]}/sweep-x/trials")
    shutil.rmtree(sweep_dir / "trials")  # only the bucket has them

    assert main(["report", str(sweep_dir)]) == 0
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert [(r["trial"], r["status"]) for r in rows] == [
        ("t_00000", "done"), ("t_00001", "stopped after 1/2 epochs")]
    assert float(rows[1]["knn_top1"]) == 0.7
