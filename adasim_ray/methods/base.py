"""What every self-distillation method shares, and what the Ray layer asks of a method.

:class:`SelfDistillationMethod` holds the step wrapper (``step`` = ``forward`` with the
monitors on the host and the loss checked), the schedule loop (the lr and weight decay of
every optimiser group set from arrays indexed by the global iteration, as DINO's
``train_one_epoch`` does) and three declarations that the Ray layer reads instead of naming
a method:

- ``monitors``: the names of the step's monitors. The training loop averages them over an
  epoch into ``metrics.jsonl`` and TensorBoard logs them every ``log_every`` steps.
- ``encoders()``: the backbones that ``export --which`` and evaluation can take, by role
  (:data:`adasim_ray.methods.roles.ENCODER_ROLES`); ``teacher`` is the one evaluated and
  cached (the paper caches the teacher backbone's feature, Section 3.3).
- ``state_bytes()``: what the method's state takes in a checkpoint (every parameter and
  buffer, and ``optimizer_slots`` tensors per trainable parameter).

:class:`MomentumMethod` adds the momentum encoder (a student branch trained by gradient and a
teacher that is its EMA), shared by DINO and BYOL (solo-learn's ``BaseMomentumMethod``).

Examples:
    >>> from adasim_ray.methods import build_method
    >>> from adasim_ray.backbones import build_backbone
    >>> backbone, dim = build_backbone("cnn_tiny_cpu", image_size=28, in_chans=1)
    >>> dino = build_method("dino", backbone, dim, epochs=2, iters_per_epoch=5,
    ...                     batch_size=64, out_dim=256, warmup_epochs=1)
    >>> sorted(dino.encoders()), "teacher_entropy" in dino.monitors
    (['student', 'teacher'], True)
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from adasim_ray.methods.roles import EVALUATED
from adasim_ray.methods.step import StepOutput, monitors_to_host, schedule_at
from adasim_ray.methods.teacher import update_momentum

__all__ = ["Branch", "MomentumMethod", "Schedules", "SelfDistillationMethod"]


@dataclass(frozen=True, kw_only=True)
class Schedules:
    """Per-iteration arrays, each of length ``epochs * iters_per_epoch``.

    Attributes:
        lr: the learning rate of every optimiser group (a group with ``fix_lr`` keeps the
            schedule's peak instead).
        weight_decay: the weight decay of the groups marked ``regularized``; None keeps the
            optimiser's own.
        momentum: the teacher's EMA momentum (momentum methods only).
    """

    lr: np.ndarray
    weight_decay: np.ndarray | None = None
    momentum: np.ndarray | None = None


class SelfDistillationMethod(nn.Module):
    """The base of every method: ``forward(anchor, partner, it) -> StepOutput`` is the
    method's own; the rest is shared or declared.

    Subclasses set ``self.schedules`` (a :class:`Schedules`), implement ``forward``,
    ``build_optimizer`` and ``encoders``, and override ``prepare_gradients`` /
    ``after_step`` where they clip, freeze or update a teacher.

    Args:
        feat_dim: the backbone's feature dimension (the cache's d).
        epochs, iters_per_epoch: the run's length, which every schedule spans.
    """

    #: The step's monitors (keys of ``StepOutput.monitors``): averaged over each epoch into
    #: ``metrics.jsonl``, logged to TensorBoard as ``step/<name>``.
    monitors: ClassVar[tuple[str, ...]] = ("loss", "z_std", "feature_std")
    #: Tensors the optimiser keeps per trainable parameter (AdamW 2, SGD with momentum 1).
    optimizer_slots: ClassVar[int] = 1
    schedules: Schedules

    def __init__(self, feat_dim: int, *, epochs: int, iters_per_epoch: int) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.iters_per_epoch = iters_per_epoch
        self.total_iters = epochs * iters_per_epoch

    # -- the step ---------------------------------------------------------------------------
    def step(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
             it: int) -> StepOutput:
        """Calling the module (its ``forward``), with the monitors as floats; raises
        FloatingPointError on a non-finite loss."""
        return monitors_to_host(self(anchor_view, partner_view, it), it, self)

    @staticmethod
    def check_pair(anchor_view: torch.Tensor, partner_view: torch.Tensor) -> None:
        if anchor_view.shape != partner_view.shape:
            raise ValueError(f"anchor and partner views differ in shape: "
                             f"{tuple(anchor_view.shape)} vs {tuple(partner_view.shape)}")

    # -- optimisation -----------------------------------------------------------------------
    def build_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    @functools.cached_property
    def peak_lr(self) -> float:
        """The largest lr of the schedule (after any warm-up): what ``fix_lr`` groups keep."""
        return float(np.max(self.schedules.lr))

    def apply_schedules(self, optimizer: torch.optim.Optimizer, it: int) -> None:
        """Set every group's lr (the peak for ``fix_lr`` groups) and the ``regularized``
        groups' weight decay from the schedules at iteration ``it``."""
        lr = schedule_at(self.schedules.lr, it, "learning rate")
        wd = (None if self.schedules.weight_decay is None
              else schedule_at(self.schedules.weight_decay, it, "weight decay"))
        for group in optimizer.param_groups:
            group["lr"] = self.peak_lr if group.get("fix_lr", False) else lr
            if wd is not None and group.get("regularized", False):
                group["weight_decay"] = wd

    def prepare_gradients(self, it: int) -> None:
        """Between backward and the optimiser step (clipping, freezing): nothing by default."""

    def after_step(self, it: int) -> None:
        """After the optimiser step (a teacher's EMA): nothing by default."""

    # -- what the Ray layer asks ------------------------------------------------------------
    def encoders(self) -> dict[str, nn.Module]:
        """The backbones by role (``teacher``, ``student``); a method with one backbone gives
        it for both."""
        raise NotImplementedError

    def encoder(self, which: str) -> nn.Module:
        """The backbone of role ``which``.

        Raises:
            ValueError: a role the method does not have, naming those it has.
        """
        found = self.encoders()
        if which not in found:
            raise ValueError(f"{type(self).__name__} has no {which!r} encoder; "
                             f"choose one of {sorted(found)}")
        return found[which]

    def eval_backbone(self) -> nn.Module:
        """The backbone evaluated, cached and exported by default (the teacher's)."""
        return self.encoder(EVALUATED)

    def state_bytes(self) -> int:
        """Bytes of the method's state in a checkpoint: parameters and buffers, and the
        optimiser's ``optimizer_slots`` tensors per trainable parameter (works on the meta
        device, so the driver sizes a checkpoint without building the model for real)."""
        tensors = [*self.parameters(), *self.buffers()]
        trainable = sum(p.numel() * p.element_size() for p in self.parameters()
                        if p.requires_grad)
        return sum(t.numel() * t.element_size() for t in tensors) \
            + self.optimizer_slots * trainable


class Branch(nn.Module):
    """backbone + head, returning both the backbone feature and the head's output."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.backbone(x)
        return feature, self.head(feature)


class MomentumMethod(SelfDistillationMethod):
    """A student :class:`Branch` trained by gradient and a teacher with its architecture whose
    weights follow the student's by EMA, theta_t <- m theta_t + (1 - m) theta_s, with m
    following ``schedules.momentum`` (DINO, Section 3.1; BYOL, Section 3.1).

    The teacher starts equal to the student (a deep copy; neither is re-initialised) and is
    only ever changed by the EMA.
    """

    def __init__(self, student: Branch, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int) -> None:
        super().__init__(feat_dim, epochs=epochs, iters_per_epoch=iters_per_epoch)
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)

    def momentum_at(self, it: int) -> float:
        if self.schedules.momentum is None:
            raise ValueError(f"{type(self).__name__} has no teacher momentum schedule")
        return schedule_at(self.schedules.momentum, it, "teacher momentum")

    @torch.no_grad()
    def after_step(self, it: int) -> None:
        """EMA update of the teacher with the scheduled momentum."""
        update_momentum(self.student, self.teacher, self.momentum_at(it))

    def encoders(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher.backbone, "student": self.student.backbone}

