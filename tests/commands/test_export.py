"""launch.py export: a run's backbone out as safetensors + config.json, rebuilt three ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import adasim_ray
from adasim_ray.backbones import build_backbone
from adasim_ray.cli import main
from adasim_ray.export import write_export
from tests.saved_runs import eval_features, write_trained_run

ROOT = Path(__file__).resolve().parents[2]


def test_export_loads_back_identically(tmp_path, capsys):
    run, model, cfg = write_trained_run(tmp_path, shard_states=[{}])
    out = tmp_path / "export"
    assert main(["export", str(run), "--output", str(out)]) == 0
    assert "teacher backbone of run (epoch 2" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["backbone"] == "cnn_tiny_cpu" and meta["kwargs"] == {"image_size": 8,
                                                                      "in_chans": 1}
    assert meta["feat_dim"] == 128 and meta["epoch"] == 2 and meta["run_name"] == "run"
    assert meta["image_size"] == 8 and meta["in_chans"] == 1 and len(meta["mean"]) == 1
    expected = eval_features(model.eval_backbone(), cfg)
    assert torch.equal(eval_features(adasim_ray.load_backbone(out), cfg), expected)
    hub = torch.hub.load(str(ROOT), "adasim_backbone", path=str(out), source="local")
    assert torch.equal(eval_features(hub, cfg), expected)
    # the student's backbone is another one
    assert main(["export", str(run), "--output", str(tmp_path / "s"), "--which", "student"]) == 0
    student = eval_features(adasim_ray.load_backbone(tmp_path / "s"), cfg)
    assert torch.equal(student, eval_features(model.student.backbone, cfg))
    assert not torch.equal(student, expected)


def test_a_plain_timm_backbone_loads_in_timm(tmp_path):
    backbone, dim = build_backbone("resnet18", image_size=96, in_chans=3, layers=(1, 1, 1, 1))
    backbone.eval()
    write_export(backbone, tmp_path, {"backbone": "resnet18", "kwargs": {
        "image_size": 96, "in_chans": 3, "layers": [1, 1, 1, 1]}, "feat_dim": dim})
    theirs = timm.create_model("resnet18", num_classes=0, pretrained=True, layers=(1, 1, 1, 1),
                               pretrained_cfg_overlay={"file": str(tmp_path /
                                                                   "backbone.safetensors")})
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(theirs.eval()(x), backbone(x))
        assert torch.equal(adasim_ray.load_backbone(tmp_path)(x), backbone(x))


def test_export_of_a_run_without_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("data: digits\n")
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no complete checkpoint" in err[0]
    with pytest.raises(adasim_ray.export.UserError, match="not an exported backbone"):
        adasim_ray.load_backbone(tmp_path)
