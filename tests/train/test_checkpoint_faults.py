"""Checkpoints under faults, without Ray: a save killed half-way, a copy cut short, a full disk,
an unwritable run directory, the fault spec and its once-only record."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from adasim_ray.config import ConfigError, load_config
from adasim_ray.resources.storage import check_storage
from adasim_ray.rundir.checkpoint import (
    MODEL,
    CheckpointError,
    damaged_checkpoints,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from adasim_ray.rundir.logs import fired
from adasim_ray.train.faults import Fault, FaultInjector, parse_faults
from adasim_ray.train.run import checkpoint_bytes, pretrain

ROOT = Path(__file__).resolve().parents[2]

# Writes a complete checkpoint of epoch 1, then dies by SIGKILL in the middle of epoch 2's.
KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from adasim_ray.rundir.checkpoint import write_checkpoint
    run = sys.argv[1]
    def save(epoch, hook=None):
        d = os.path.join(run, f"checkpoint_{epoch:03d}")
        os.makedirs(d)
        write_checkpoint(d, model_state={"w": torch.full((1000,), float(epoch))},
                         shard_states=[{"z": torch.arange(10) * epoch}],
                         meta={"epoch": epoch, "settings": {"cache_shards": 1}},
                         between_files=hook)
    save(1)
    save(2, hook=lambda: os.kill(os.getpid(), signal.SIGKILL))
    """
)


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_loadable(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # really killed, not an exception
    assert (tmp_path / "checkpoint_002" / MODEL).is_file()  # the half-written save is there
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_001"
    meta, state, shards = read_checkpoint(tmp_path / "checkpoint_001")
    assert meta["epoch"] == 1
    assert torch.equal(state["w"], torch.full((1000,), 1.0))
    assert torch.equal(shards[0]["z"], torch.arange(10))
    assert any("interrupted" in line for line in damaged_checkpoints(tmp_path))


def _save(directory: Path, epoch: int) -> None:
    directory.mkdir()
    write_checkpoint(directory, model_state={"w": torch.ones(4096) * epoch},
                     shard_states=[{"z": torch.zeros(8)}],
                     meta={"epoch": epoch, "settings": {"cache_shards": 1}})


def test_a_truncated_file_under_a_complete_meta_is_passed_over(tmp_path):
    # Ray copies a reported checkpoint file by file: meta.json can land before model.pt ends.
    _save(tmp_path / "checkpoint_a", 1)
    _save(tmp_path / "checkpoint_b", 2)
    model = tmp_path / "checkpoint_b" / MODEL
    model.write_bytes(model.read_bytes()[:1000])
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_a"
    [problem] = damaged_checkpoints(tmp_path)
    assert "truncated" in problem and "checkpoint_b" in problem
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "checkpoint_b")


def test_resume_with_only_damaged_checkpoints_is_refused_in_one_line(tmp_path):
    cfg = load_config(None, ["data=digits", "limit_images=200", "batch_size=32"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: digits\n")
    _save(run / "checkpoint_a", 1)
    (run / "checkpoint_a" / MODEL).write_bytes(b"cut")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*truncated"):
        pretrain(cfg, resume=str(run))


def test_an_unwritable_output_fails_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the run directory"):
        check_storage(str(blocker / "runs" / "x"), 1000)


def test_a_full_disk_fails_at_start(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 * 2**20))
    with pytest.raises(ConfigError, match="10 MiB free, two checkpoints need"):
        check_storage(str(tmp_path), 6 * 2**20)
    check_storage(str(tmp_path), 4 * 2**20)  # room for two: fine


def test_checkpoint_size_estimate_matches_a_real_checkpoint(tmp_path):
    from adasim_ray.backbones import build_backbone

    cfg = load_config(None, ["data=digits", "limit_images=300"])
    backbone, dim = build_backbone(cfg.backbone, image_size=8, in_chans=1)
    params = sum(p.numel() for p in backbone.parameters())
    # Grows with the cache and the method's state: 300 images of 96-d fp16 rows and the
    # state the method declares.
    assert checkpoint_bytes(cfg, 300, dim, 16 * params) > 16 * params + 300 * dim * 2


def test_fault_spec_parses_and_rejects_in_one_line():
    assert parse_faults("kill_worker@6, kill_shard@9,kill_driver@14") == [
        Fault("kill_worker", 6), Fault("kill_shard", 9), Fault("kill_driver", 14)]
    assert parse_faults("") == []
    for bad in ("kill_worker", "kill_everything@3", "kill_shard@x"):
        with pytest.raises(ValueError, match="ADASIM_FAULT: bad entry"):
            parse_faults(bad)


def test_a_bad_fault_spec_stops_the_cli_before_ray(tmp_path, capsys, monkeypatch):
    from adasim_ray.cli import main

    monkeypatch.setenv("ADASIM_FAULT", "kill_it@3")
    code = main(["pretrain", "--data", "digits", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "ADASIM_FAULT" in err[0]


def test_a_fault_fires_once_per_run(tmp_path):
    injector = FaultInjector([Fault("kill_driver", 3)], str(tmp_path), driver_pid=None)
    injector.at_step(2)
    assert fired(tmp_path) == []
    injector.at_step(3)
    injector.at_step(3)  # a restarted worker reaching step 3 again
    assert [(f["fault"], f["at"], f["pid"]) for f in fired(tmp_path)] == [
        ("kill_driver", 3, os.getpid())]
