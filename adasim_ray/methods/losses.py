"""The two self-distillation losses, for a pair of views (view 0 = t(x_i), view 1 = t'(x_j*)).

AdaSim (Section 3.3, Fig. 2) keeps the loss L of the base method and only changes which
image gives the second view, so these are the plain DINO and SimSiam losses on two views.

Examples:
    >>> loss_fn = DINOLoss(out_dim=16)
    >>> student, teacher = torch.randn(8, 16), torch.randn(8, 16)  # 2 views x batch 4
    >>> loss = loss_fn(student, teacher, teacher_temp=0.04)
    >>> round(float(negative_cosine(torch.ones(2, 3), torch.ones(2, 3))), 4)
    -1.0
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss", "negative_cosine", "simsiam_loss"]


class DINOLoss(nn.Module):
    """DINO's cross-entropy between a centred, sharpened teacher and the student
    (Caron et al., 2021, Eq. 1-2 and Section 3.1 "Avoiding collapse").

    With the outputs of the two views stacked as ``[view 0; view 1]`` (each B rows):

        P_t = softmax((g_t(x) - c) / T_t),   log P_s = log_softmax(g_s(x) / T_s)
        L = ( H(P_t(view 1), P_s(view 0)) + H(P_t(view 0), P_s(view 1)) ) / 2

    where H(a, b) = -sum_k a_k log b_k, averaged over the batch. The centre c is an EMA of
    the teacher's batch mean (both views, all ranks): c <- m c + (1 - m) mean(g_t(x)).

    Args:
        out_dim: number of logits K (size of the centre).
        student_temp: T_s (0.1).
        center_momentum: m (0.9).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        # device=None: the default device, as for every torch.nn layer's own tensors.
        self.register_buffer("center", torch.zeros(1, out_dim, device=None))

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """P_t: centred and sharpened teacher distribution, without gradient."""
        return F.softmax((teacher_out.detach() - self.center) / teacher_temp, dim=-1)

    def cross_entropy(self, student_out: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """L above, from the student logits and the teacher probabilities of both views."""
        s0, s1 = (student_out / self.student_temp).chunk(2)
        t0, t1 = teacher_probs.chunk(2)
        ce_01 = torch.sum(-t1 * F.log_softmax(s0, dim=-1), dim=-1).mean()
        ce_10 = torch.sum(-t0 * F.log_softmax(s1, dim=-1), dim=-1).mean()
        return 0.5 * (ce_01 + ce_10)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the teacher's mean output, averaged over all ranks when distributed."""
        batch_sum = teacher_out.sum(dim=0, keepdim=True)
        count = teacher_out.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_sum / count,
                                                    alpha=1.0 - self.center_momentum)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor,
                teacher_temp: float) -> torch.Tensor:
        """Loss of this step (with the centre *before* the update), then update the centre.

        Args:
            student_out: (2B, K) student logits, rows ``[view 0; view 1]``.
            teacher_out: (2B, K) teacher logits, same row order.
            teacher_temp: T_t at this iteration (from the warm-up schedule).
        """
        loss = self.cross_entropy(student_out, self.teacher_probs(teacher_out, teacher_temp))
        self.update_center(teacher_out)
        return loss


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch (Eq. 1 with the
    stop-gradient of Eq. 3 in Chen & He, 2021)."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def simsiam_loss(p0: torch.Tensor, p1: torch.Tensor, z0: torch.Tensor,
                 z1: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric loss L = D(p0, z1) / 2 + D(p1, z0) / 2 (Chen & He, 2021, Eq. 2)."""
    return 0.5 * (negative_cosine(p0, z1) + negative_cosine(p1, z0))
