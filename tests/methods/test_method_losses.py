"""Losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from adasim_ray.methods.losses import DINOLoss, negative_cosine, simsiam_loss

T_S, T_T = 0.1, 0.04


def _dino_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    # Chosen so that the softmaxes are simple fractions:
    #   teacher view 0 uniform (1/3 each), teacher view 1 = (1/2, 1/4, 1/4);
    #   student view 0 uniform, student view 1 = (3/5, 1/5, 1/5).
    student = torch.tensor([[0.0, 0.0, 0.0], [math.log(3.0) * T_S, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0) * T_T, 0.0, 0.0]])
    return student, teacher


def test_dino_loss_matches_hand_computed_value() -> None:
    student, teacher = _dino_inputs()
    loss = DINOLoss(out_dim=3, student_temp=T_S)(student, teacher, teacher_temp=T_T)
    # H(t1, s0) = ln 3 (s0 uniform); H(t0, s1) = -(1/3)(ln 3/5 + 2 ln 1/5) = ln 5 - ln 3 / 3.
    expected = 0.5 * (math.log(3.0) + math.log(5.0) - math.log(3.0) / 3.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dino_loss_pairs_each_student_view_with_the_other_teacher_view() -> None:
    student, teacher = _dino_inputs()
    loss_fn = DINOLoss(out_dim=3, student_temp=T_S)
    swapped = loss_fn(student, teacher.flip(0), teacher_temp=T_T)
    # Swapping the teacher's views gives (H(t0, s0) + H(t1, s1)) / 2 of the first test's
    # tensors: ln 3 and -(ln 3/5 + ln 1/5) / 2.
    same_view = 0.5 * (math.log(3.0) + -(0.5 * math.log(0.6) + 0.5 * math.log(0.2)))
    assert swapped.item() == pytest.approx(same_view, rel=1e-6)


def test_centre_is_ema_of_teacher_batch_mean_and_used_next_step() -> None:
    student, teacher = _dino_inputs()
    loss_fn = DINOLoss(out_dim=3, student_temp=T_S, center_momentum=0.9)
    loss_fn(student, teacher, teacher_temp=T_T)
    expected = 0.1 * teacher.mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected, rtol=0, atol=1e-9)
    loss_fn(student, teacher, teacher_temp=T_T)
    expected = 0.9 * expected + 0.1 * teacher.mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected, rtol=0, atol=1e-9)
    # The teacher distribution is computed from the centred logits.
    probs = loss_fn.teacher_probs(teacher, T_T)
    torch.testing.assert_close(probs, torch.softmax((teacher - expected) / T_T, dim=-1))


def test_dino_loss_gradient_reaches_student_only() -> None:
    student, teacher = _dino_inputs()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    DINOLoss(out_dim=3)(student, teacher, teacher_temp=T_T).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_simsiam_loss_matches_hand_computed_value() -> None:
    p0, z1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]], requires_grad=True)
    p1, z0 = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, -1.0]], requires_grad=True)
    p0.requires_grad_(True)
    loss = simsiam_loss(p0, p1, z0, z1)
    # D(p0, z1) = -1/sqrt(2), D(p1, z0) = +1.
    assert loss.item() == pytest.approx(0.5 * (1.0 - 1.0 / math.sqrt(2.0)), rel=1e-6)
    loss.backward()
    assert z0.grad is None and z1.grad is None  # stop-gradient on z
    assert p0.grad is not None


def test_negative_cosine_is_scale_invariant_and_averaged() -> None:
    p = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    z = torch.tensor([[5.0, 0.0], [0.0, -1.0]])
    assert negative_cosine(p, z).item() == pytest.approx(0.0)  # (-1 + 1) / 2
