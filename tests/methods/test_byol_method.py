"""BYOL: the loss, the target's anchor feature, the EMA, the optimiser, its config section in
the four modes, and a local-mode run through the Ray layer (which names no method)."""

from __future__ import annotations

import math

import pytest
import torch

from adasim_ray.backbones import build_backbone
from adasim_ray.config import ConfigError, load_config
from adasim_ray.methods import Method, build_method, train_step
from adasim_ray.methods.byol import BYOL, BYOLConfig, byol_loss
from tests.methods.conftest import BATCH, EPOCHS, IMAGE_SIZE, ITERS_PER_EPOCH


def tiny_byol(**config: object) -> BYOL:
    backbone, dim = build_backbone("resnet_tiny_cpu", image_size=IMAGE_SIZE, in_chans=1,
                                   channels=(8, 8, 8, 8))
    defaults: dict[str, object] = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16,
                                   "warmup_epochs": 1, "momentum_teacher": 0.9}
    return BYOL(backbone, dim, epochs=EPOCHS, iters_per_epoch=ITERS_PER_EPOCH,
                batch_size=BATCH, config=BYOLConfig(**{**defaults, **config}))


def test_loss_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[3.0, 0.0], [2.0, 0.0]])  # cos 1 and cos 0
    assert float(byol_loss(p, z)) == pytest.approx((0.0 + 2.0) / 2)
    z.requires_grad_(True)
    p.requires_grad_(True)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad is not None  # the target is a stop-gradient


def test_step_output_monitors_and_anchor_feature(views):
    byol = tiny_byol()
    anchor, partner = views
    with torch.no_grad():  # online and target differ, so the test can tell them apart
        for param in byol.student.parameters():
            param.add_(0.05)
    byol.eval()  # BatchNorm frozen: the feature of the anchor view alone
    out = byol.step(anchor, partner, it=0)
    assert isinstance(byol, Method)
    assert 0.0 <= out.monitors["loss"] <= 4.0 and out.loss.requires_grad
    assert set(BYOL.monitors) <= set(out.monitors)
    with torch.no_grad():
        target = byol.teacher.backbone(anchor)
        online = byol.student.backbone(anchor)
    torch.testing.assert_close(out.anchor_feature, target)
    assert not torch.allclose(out.anchor_feature, online, atol=1e-3)
    assert byol.eval_backbone() is byol.teacher.backbone
    assert byol.encoder("student") is byol.student.backbone


def test_target_follows_the_online_network_by_ema_and_gets_no_gradient(views):
    byol = tiny_byol()
    optimizer = byol.build_optimizer()
    before = [p.clone() for p in byol.teacher.parameters()]
    train_step(byol, optimizer, *views, it=2)
    momentum = float(byol.schedules.momentum[2])
    assert 0.9 <= momentum < 1.0
    for online, target, old in zip(byol.student.parameters(), byol.teacher.parameters(),
                                   before, strict=True):
        assert target.grad is None and not target.requires_grad
        torch.testing.assert_close(target, momentum * old + (1 - momentum) * online)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in byol.predictor.parameters()} <= optimised
    assert not optimised & {id(p) for p in byol.teacher.parameters()}


def test_optimiser_groups_and_schedule():
    byol = tiny_byol(weight_decay=1e-4)
    optimizer = byol.build_optimizer()
    regularized, plain = optimizer.param_groups
    assert regularized["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in regularized["params"])
    byol.apply_schedules(optimizer, ITERS_PER_EPOCH)  # the end of the warm-up epoch
    assert regularized["lr"] == pytest.approx(0.05 * BATCH / 256)
    assert byol.state_bytes() > 0


def test_training_is_deterministic_and_learns_to_predict(views):
    def run() -> list[float]:
        torch.manual_seed(0)
        byol = tiny_byol(base_lr=0.5)
        optimizer = byol.build_optimizer()
        return [train_step(byol, optimizer, *views, it).monitors["loss"]
                for it in range(EPOCHS * ITERS_PER_EPOCH)]

    first = run()
    assert first == run()
    assert all(math.isfinite(x) for x in first) and first[-1] < first[0]


def test_build_by_name_and_bad_fields():
    backbone, dim = build_backbone("cnn_tiny_cpu", image_size=IMAGE_SIZE, in_chans=1)
    byol = build_method("byol", backbone, dim, epochs=2, iters_per_epoch=3, batch_size=8,
                        proj_dim=8, proj_hidden_dim=16, pred_hidden_dim=16, warmup_epochs=1)
    assert isinstance(byol, BYOL)
    with pytest.raises(ValueError, match="momentum_teacher: must lie in"):
        BYOLConfig(momentum_teacher=1.5)


@pytest.mark.parametrize("mode", ["none", "nn", "adasim", "oracle"])
def test_the_byol_section_in_every_mode(mode):
    cfg = load_config(None, ["method=byol", f"adasim.mode={mode}", "byol.proj_dim=64"])
    assert cfg.method == "byol" and cfg.adasim.mode == mode
    assert cfg.method_config == BYOLConfig(proj_dim=64)
    with pytest.raises(ConfigError, match=r"byol\.base_lr: must be > 0"):
        load_config(None, ["method=byol", "byol.base_lr=0"])


@pytest.mark.ray
def test_byol_trains_through_the_ray_layer_with_partners(ray_session, tmp_path):
    """Local mode, 3 epochs of a window of 1: the last two epochs bootstrap."""
    from adasim_ray.rundir.metrics import MetricsLog
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, [
        "method=byol", "data=digits", "limit_images=128", "backbone=cnn_tiny_cpu",
        "epochs=3", "batch_size=32", "adasim.window=1", "adasim.topk=3", "adasim.tau=0.2",
        "byol.proj_hidden_dim=64", "byol.proj_dim=32", "byol.pred_hidden_dim=64",
        "byol.warmup_epochs=0", "byol.momentum_teacher=0.9", "eval.max_train=200",
        "eval.max_test=60", "eval.linear=false", "eval.fewshot=false", "ray.num_workers=0",
    ])
    summary = pretrain(cfg, str(tmp_path), log_every=1000)
    rows = MetricsLog(summary["run_dir"]).read()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(0.0 <= r["loss"] <= 4.0 and 0.0 < r["momentum"] < 1.0 for r in rows)
    assert rows[0]["bootstrap_ratio"] == 0.0 and rows[-1]["bootstrap_ratio"] > 0.0
    assert 0.0 <= rows[-1]["knn_top1"] <= 1.0
