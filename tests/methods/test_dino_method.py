"""DINO-2: EMA, frozen last layer, clipping, anchor feature, errors, determinism."""

from __future__ import annotations

import pickle

import pytest
import torch

from adasim_ray.methods import DINO, Method, train_step


def test_step_output_and_monitors(make_dino, views) -> None:
    dino: DINO = make_dino()
    anchor, partner = views
    out = dino.step(anchor, partner, it=0)
    assert out.loss.ndim == 0 and out.loss.requires_grad
    assert out.anchor_feature.shape == (anchor.shape[0], dino.feat_dim)
    assert out.anchor_feature.dtype == torch.float32 and not out.anchor_feature.requires_grad
    assert {"loss", "z_std", "teacher_entropy", "teacher_temp"} <= set(out.monitors)
    assert 0.0 < out.monitors["teacher_entropy"] <= torch.log(torch.tensor(32.0)).item() + 1e-5
    assert isinstance(dino, Method)


def test_anchor_feature_is_teacher_backbone_feature_of_anchor_view(make_dino, views) -> None:
    dino: DINO = make_dino()
    anchor, partner = views
    with torch.no_grad():  # make student and teacher differ so the test can tell them apart
        for p in dino.student.parameters():
            p.add_(0.1)
    out = dino.step(anchor, partner, it=0)
    with torch.no_grad():
        expected = dino.teacher.backbone(anchor)
        student_feature = dino.student.backbone(anchor)
        partner_feature = dino.teacher.backbone(partner)
    torch.testing.assert_close(out.anchor_feature, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.anchor_feature, student_feature, atol=1e-3)
    assert not torch.allclose(out.anchor_feature, partner_feature, atol=1e-3)
    assert dino.eval_backbone() is dino.teacher.backbone


def test_teacher_starts_equal_and_has_no_gradients(make_dino) -> None:
    dino: DINO = make_dino()
    for ps, pt in zip(dino.student.parameters(), dino.teacher.parameters(), strict=True):
        torch.testing.assert_close(ps, pt, rtol=0, atol=0)
        assert not pt.requires_grad


def test_ema_update_is_exact(make_dino) -> None:
    dino: DINO = make_dino()
    with torch.no_grad():
        for p in dino.student.parameters():
            p.copy_(torch.randn_like(p))
    before = [p.clone() for p in dino.teacher.parameters()]
    it = 3
    momentum = float(dino.schedules.momentum[it])
    assert 0.9 < momentum < 1.0
    dino.after_step(it)
    for ps, pt, old in zip(dino.student.parameters(), dino.teacher.parameters(), before,
                           strict=True):
        torch.testing.assert_close(pt, momentum * old + (1.0 - momentum) * ps,
                                   rtol=1e-6, atol=1e-7)


def test_last_layer_frozen_during_first_epoch_only(make_dino, views) -> None:
    dino: DINO = make_dino(freeze_last_layer=1)
    optimizer = dino.build_optimizer()
    last = dino.student.head.last_layer.weight_v
    first_mlp = dino.student.head.mlp.net[0].weight
    anchor, partner = views
    last_start, mlp_start = last.detach().clone(), first_mlp.detach().clone()
    for it in range(dino.iters_per_epoch):  # epoch 0 (lr is 0 at it = 0, the warm-up start)
        train_step(dino, optimizer, anchor, partner, it)
        torch.testing.assert_close(last, last_start, rtol=0, atol=0)
    assert not torch.equal(first_mlp, mlp_start)
    last_before = last.detach().clone()
    train_step(dino, optimizer, anchor, partner, dino.iters_per_epoch)  # epoch 1
    assert not torch.equal(last, last_before)


def test_gradients_are_clipped_per_parameter(make_dino, views) -> None:
    dino: DINO = make_dino(clip_grad=1e-3)
    dino.step(*views, it=2).loss.backward()
    dino.prepare_gradients(it=2)  # epoch 1: last layer not frozen
    norms = [p.grad.norm().item() for p in dino.student.parameters() if p.grad is not None]
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)


def test_optimizer_groups_and_schedules(make_dino) -> None:
    dino: DINO = make_dino()
    optimizer = dino.build_optimizer()
    regularized, plain = optimizer.param_groups
    assert all(p.ndim > 1 for p in regularized["params"])
    assert all(p.ndim == 1 for p in plain["params"])
    n_trainable = sum(1 for p in dino.student.parameters() if p.requires_grad)
    assert len(regularized["params"]) + len(plain["params"]) == n_trainable
    dino.apply_schedules(optimizer, 4)
    assert regularized["lr"] == pytest.approx(dino.schedules.lr[4])
    assert regularized["weight_decay"] == pytest.approx(dino.schedules.weight_decay[4])
    assert plain["weight_decay"] == 0.0
    # 5e-4 * 4 / 256 peaks at the end of the 1-epoch warm-up.
    assert dino.schedules.lr[dino.iters_per_epoch - 1] == pytest.approx(5e-4 * 4 / 256)


def test_state_dict_holds_student_teacher_and_centre(make_dino, views) -> None:
    dino: DINO = make_dino()
    dino.step(*views, it=0)
    state = dino.state_dict()
    assert any(k.startswith("student.backbone.") for k in state)
    assert any(k.startswith("teacher.head.") for k in state)
    assert state["loss_fn.center"].abs().sum() > 0
    clone: DINO = make_dino()
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.loss_fn.center, dino.loss_fn.center)


def test_non_finite_loss_raises_naming_the_iteration(make_dino, views) -> None:
    dino: DINO = make_dino()
    anchor, partner = views
    anchor = anchor.clone()
    anchor[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="iteration 5"):
        dino.step(anchor, partner, it=5)


def test_iteration_past_the_schedule_is_an_error(make_dino, views) -> None:
    dino: DINO = make_dino()
    with pytest.raises(IndexError, match="schedule"):
        dino.step(*views, it=dino.total_iters)


def test_same_seed_same_losses(make_dino, views) -> None:
    def run() -> list[float]:
        torch.manual_seed(0)
        dino: DINO = make_dino()
        optimizer = dino.build_optimizer()
        return [train_step(dino, optimizer, *views, it).monitors["loss"] for it in range(3)]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 3  # the model did change between steps


def test_method_pickles_for_ray(make_dino, views) -> None:
    dino: DINO = make_dino()
    clone = pickle.loads(pickle.dumps(dino))
    torch.manual_seed(0)
    expected = dino.step(*views, it=0).monitors["loss"]
    torch.manual_seed(0)
    assert clone.step(*views, it=0).monitors["loss"] == expected
