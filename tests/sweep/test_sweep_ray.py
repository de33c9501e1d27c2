"""A real sweep on digits: two trials (each a Ray Train run with its cache actor), the
driver killed with SIGKILL after the first trial finished, then ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from adasim_ray.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "digits_sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(ROOT / "experiments" / "digits_smoke.yaml"),
                "pretrain": {
                    "limit_images": 384,
                    "epochs": 2,
                    "checkpoint_every": 1,
                    "eval": {"knn_every": 2, "max_train": 300, "max_test": 100},
                },
                "search": {"center": {"adasim.tau": 0.2}, "factors": {"adasim.tau": [0.0]}},
            }
        )
    )
    return path


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep driver exited early ({proc.returncode})")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting for the sweep")
        time.sleep(0.5)


def test_sweep_killed_then_resumed_reruns_no_finished_trial(ray_session, tmp_path):
    out = tmp_path / "sweeps"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "sweep", "--config", str(_sweep_file(tmp_path)),
         "--output", str(out)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        trials = lambda: sorted((next(out.glob("sweep-*")) / "trials").glob("*"))  # noqa: E731

        def second_trial_training() -> bool:
            try:
                found = trials()
            except StopIteration:
                return False
            # The first trial finished, the second has started.
            return (
                len(found) >= 2
                and (found[0] / "summary.json").is_file()
                and (found[1] / "config.yaml").is_file()
            )

        _wait_for(second_trial_training, 600, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    sweep_dir = next(out.glob("sweep-*"))
    first = trials()[0]
    first_summary = (first / "summary.json").stat().st_mtime_ns
    first_rows = (first / "metrics.jsonl").read_text()
    assert not (sweep_dir / "results.md").exists()  # the driver died before the table

    assert main(["sweep", "--resume", str(sweep_dir)]) == 0

    done = sorted((sweep_dir / "trials").glob("*"))
    assert len(done) == 2
    # The finished trial was not trained again: same summary, same metrics.
    assert (first / "summary.json").stat().st_mtime_ns == first_summary
    assert (first / "metrics.jsonl").read_text() == first_rows
    for trial in done:
        assert (trial / "summary.json").is_file(), trial
        rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2], trial  # no epoch twice, none missing
        assert rows[-1]["knn_top1"] is not None
    # The table: one row per trial, each with its tau and a k-NN accuracy.
    md = (sweep_dir / "results.md").read_text()
    for trial, tau in zip(done, ("0.2000", "0.0000"), strict=True):
        line = next(x for x in md.splitlines() if x.startswith(f"| {trial.name} "))
        assert f"| {tau} |" in line and "| done |" in line
    assert "Best setting: tau =" in md
    assert (sweep_dir / "results.csv").read_text().count("\n") == 3
