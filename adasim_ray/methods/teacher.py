"""What every method with a momentum teacher shares: the EMA update of the teacher and DINO's
per-parameter gradient clipping, each as a few ``torch._foreach_*`` calls over all parameters
(one kernel per operation instead of a Python loop over the parameters).

Examples:
    >>> student, teacher = nn.Linear(4, 2), nn.Linear(4, 2)
    >>> update_momentum(student, teacher, momentum=0.996)
    >>> student(torch.randn(3, 4)).sum().backward()
    >>> clip_gradients(student.parameters(), 3.0)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["clip_gradients", "update_momentum"]


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s over the parameters (DINO, Section 3.1; the
    teacher's buffers, such as BatchNorm statistics, keep their own updates)."""
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError(f"teacher has {len(teacher_params)} parameters, the student "
                         f"{len(student_params)}: not the same architecture")
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)


@torch.no_grad()
def clip_gradients(parameters: Iterable[nn.Parameter], clip: float) -> None:
    """Scale each parameter's gradient to L2 norm at most ``clip`` (DINO's ``clip_gradients``
    clips per parameter, not globally as ``clip_grad_norm_`` does)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads, 2))
    scales = (clip / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(scales.unbind()))
