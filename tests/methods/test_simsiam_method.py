"""SimSiam: step output, anchor feature, fixed predictor lr, determinism."""

from __future__ import annotations

import pytest
import torch

from adasim_ray.methods import Method, SimSiam, build_method, train_step


def test_step_output_and_anchor_feature(make_simsiam, views) -> None:
    simsiam: SimSiam = make_simsiam()
    anchor, partner = views
    out = simsiam.step(anchor, partner, it=0)
    assert -1.0 <= out.loss.item() <= 1.0 and out.loss.requires_grad
    assert out.anchor_feature.shape == (anchor.shape[0], simsiam.feat_dim)
    assert not out.anchor_feature.requires_grad
    simsiam.eval()  # compare with BatchNorm frozen: feature of the anchor view, not partner
    out = simsiam.step(anchor, partner, it=0)
    with torch.no_grad():
        torch.testing.assert_close(out.anchor_feature, simsiam.backbone(anchor))
    assert {"loss", "z_std"} <= set(out.monitors)
    assert simsiam.eval_backbone() is simsiam.backbone
    assert isinstance(simsiam, Method)


def test_predictor_keeps_peak_lr_when_fixed(make_simsiam, views) -> None:
    simsiam: SimSiam = make_simsiam(fix_pred_lr=True)
    optimizer = simsiam.build_optimizer()
    last = simsiam.total_iters - 1
    simsiam.apply_schedules(optimizer, last)
    encoder, predictor = optimizer.param_groups
    assert predictor["lr"] == pytest.approx(0.05 * 4 / 256)
    assert encoder["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to min_lr = 0
    assert encoder["momentum"] == 0.9 and encoder["weight_decay"] == 1e-4


def test_training_changes_encoder_and_is_deterministic(make_simsiam, views) -> None:
    def run() -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        simsiam: SimSiam = make_simsiam()
        optimizer = simsiam.build_optimizer()
        losses = [train_step(simsiam, optimizer, *views, it).monitors["loss"]
                  for it in range(3)]
        return losses, simsiam.projector.net[0].weight.detach().clone()

    (losses_a, weight_a), (losses_b, weight_b) = run(), run()
    assert losses_a == losses_b
    torch.testing.assert_close(weight_a, weight_b, rtol=0, atol=0)
    torch.manual_seed(0)
    untrained = make_simsiam().projector.net[0].weight
    assert not torch.equal(untrained, weight_a)


def test_non_finite_loss_raises(make_simsiam, views) -> None:
    simsiam: SimSiam = make_simsiam()
    anchor, partner = views
    with pytest.raises(FloatingPointError, match="iteration 1"):
        simsiam.step(anchor * float("inf"), partner, it=1)


def test_build_method_rejects_unknown_names(make_simsiam) -> None:
    backbone = make_simsiam().backbone
    with pytest.raises(ValueError, match="unknown method 'swav'"):
        build_method("swav", backbone, 8, epochs=1, iters_per_epoch=1, batch_size=4)
    with pytest.raises(ValueError, match="out_dim"):
        build_method("simsiam", backbone, 8, epochs=1, iters_per_epoch=1, batch_size=4,
                     out_dim=3)
