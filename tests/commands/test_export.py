"""launch.py export: a run's backbone out as safetensors + config.json, rebuilt three ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import adasim_ray
from adasim_ray.backbones import build_backbone
from adasim_ray.cli import main
from adasim_ray.config import dump_config, load_config
from adasim_ray.export import write_export
from adasim_ray.recipe import build_model, make_views, open_eval_sources, open_train_source
from adasim_ray.rundir.checkpoint import key_settings, write_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _trained_run(root: Path) -> tuple[Path, torch.nn.Module, object]:
    """A run directory whose checkpoint holds a DINO model with moved (not initial) weights,
    the teacher apart from the student."""
    cfg = load_config(None, ["data=digits", "limit_images=300", "batch_size=32",
                             "backbone=cnn_tiny_cpu"])
    views = make_views(cfg, open_train_source(cfg))
    model = build_model(cfg, views, 300)
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
    run = root / "run"
    (run / "checkpoint_000002").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    write_checkpoint(run / "checkpoint_000002", model_state={"model": model.state_dict()},
                     shard_states=[{}],
                     meta={"epoch": 2, "settings": key_settings(cfg, 300, 128),
                           "plan_metrics": {}})
    return run, model, cfg


def _features(backbone: torch.nn.Module, cfg) -> torch.Tensor:
    _, test = open_eval_sources(cfg)
    views = make_views(cfg, open_train_source(cfg))
    x = torch.stack([views.eval_transform(im) for im in test.load_many(np.arange(16))])
    with torch.no_grad():
        return backbone.eval()(x)


def test_export_loads_back_identically(tmp_path, capsys):
    run, model, cfg = _trained_run(tmp_path)
    out = tmp_path / "export"
    assert main(["export", str(run), "--output", str(out)]) == 0
    assert "teacher backbone of run (epoch 2" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["backbone"] == "cnn_tiny_cpu" and meta["kwargs"] == {"image_size": 8,
                                                                      "in_chans": 1}
    assert meta["feat_dim"] == 128 and meta["epoch"] == 2 and meta["run_name"] == "run"
    assert meta["image_size"] == 8 and meta["in_chans"] == 1 and len(meta["mean"]) == 1
    expected = _features(model.eval_backbone(), cfg)
    assert torch.equal(_features(adasim_ray.load_backbone(out), cfg), expected)
    hub = torch.hub.load(str(ROOT), "adasim_backbone", path=str(out), source="local")
    assert torch.equal(_features(hub, cfg), expected)
    # the student's backbone is another one
    assert main(["export", str(run), "--output", str(tmp_path / "s"), "--which", "student"]) == 0
    student = _features(adasim_ray.load_backbone(tmp_path / "s"), cfg)
    assert torch.equal(student, _features(model.student.backbone, cfg))
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
