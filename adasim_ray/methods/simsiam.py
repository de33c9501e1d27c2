"""SimSiam (Chen & He, 2021), the paper's second base method (Section 4.1, Tables 2-3).

An encoder f = projector o backbone and a predictor h; the loss is the symmetric negative
cosine between h(f(view a)) and stopgrad(f(view b)). No teacher: the stop-gradient is the
asymmetry. With AdaSim the views are t(x_i) and t'(x_j*); the cache stores the backbone
feature of the anchor view, taken without gradient.

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> backbone, dim = build_backbone("resnet_tiny_cpu", image_size=28, in_chans=1)
    >>> simsiam = SimSiam(backbone, dim, epochs=10, iters_per_epoch=100, batch_size=128,
    ...                   config=SimSiamConfig(proj_hidden_dim=512, proj_dim=512,
    ...                                        pred_dim=128))
    >>> optimizer = simsiam.build_optimizer()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adasim_ray.methods.base import Schedules, SelfDistillationMethod
from adasim_ray.methods.heads import SimSiamPredictor, SimSiamProjector
from adasim_ray.methods.losses import simsiam_loss
from adasim_ray.methods.monitors import std_of_l2_normalized
from adasim_ray.methods.ranges import check_ranges
from adasim_ray.methods.registry import register_method
from adasim_ray.methods.schedules import cosine_schedule, scaled_lr
from adasim_ray.methods.step import StepOutput, schedule_at

__all__ = ["SimSiam", "SimSiamConfig"]


@dataclass(frozen=True)
class SimSiamConfig:
    """SimSiam's hyper-parameters; the defaults are the authors' ImageNet settings.

    Attributes:
        proj_hidden_dim: hidden width of the projector (2048).
        proj_dim: output width d of the projector (2048).
        pred_dim: bottleneck of the predictor (512).
        base_lr: lr per 256 images; the peak lr is ``base_lr * batch / 256`` (0.05).
        min_lr: lr at the end of the cosine (0).
        warmup_epochs: epochs of linear lr warm-up (0, as SimSiam).
        momentum: SGD momentum (0.9).
        weight_decay: applied to every parameter, as SimSiam does (1e-4).
        fix_pred_lr: keep the predictor at the peak lr instead of decaying it (SimSiam's
            ``--fix-pred-lr``, its Table 1 "fixed": better than decaying it).
    """

    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_dim: int = 512
    base_lr: float = 0.05
    min_lr: float = 0.0
    warmup_epochs: float = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    fix_pred_lr: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, positive=("proj_hidden_dim", "proj_dim", "pred_dim", "base_lr"),
                     non_negative=("min_lr", "warmup_epochs", "weight_decay"),
                     unit_open=("momentum",))


@register_method("simsiam", SimSiamConfig)
class SimSiam(SelfDistillationMethod):
    """SimSiam with stop-gradient and a predictor.

    Args:
        backbone: maps (B, C, S, S) to (B, feat_dim), e.g. from ``build_backbone``.
        feat_dim: the backbone's feature dimension.
        epochs, iters_per_epoch, batch_size: fix the per-iteration lr schedule.
        config: hyper-parameters.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int,
                 config: SimSiamConfig | None = None) -> None:
        super().__init__(feat_dim, epochs=epochs, iters_per_epoch=iters_per_epoch)
        self.config = config = config if config is not None else SimSiamConfig()
        self.backbone = backbone
        self.projector = SimSiamProjector(feat_dim, config.proj_hidden_dim, config.proj_dim)
        self.predictor = SimSiamPredictor(config.proj_dim, config.pred_dim)
        self.schedules = Schedules(lr=cosine_schedule(
            scaled_lr(config.base_lr, batch_size), config.min_lr, epochs=epochs,
            iters_per_epoch=iters_per_epoch, warmup_epochs=config.warmup_epochs))

    def forward(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
                it: int) -> StepOutput:
        """Loss of the pair (t(x_i), t'(x_j*)) and the backbone feature of t(x_i).

        The views go through the encoder one at a time, as in SimSiam, so that each
        BatchNorm normalises over one view's batch.
        """
        self.check_pair(anchor_view, partner_view)
        schedule_at(self.schedules.lr, it, "learning rate")  # fail early past the schedule
        feature0 = self.backbone(anchor_view)
        z0 = self.projector(feature0)
        z1 = self.projector(self.backbone(partner_view))
        p0, p1 = self.predictor(z0), self.predictor(z1)
        loss = simsiam_loss(p0, p1, z0, z1)

        anchor_feature = feature0.detach().float()
        monitors = {
            "loss": loss.detach(),
            "z_std": 0.5 * (std_of_l2_normalized(z0) + std_of_l2_normalized(z1)),
            "feature_std": std_of_l2_normalized(anchor_feature),
        }
        return StepOutput(loss=loss, anchor_feature=anchor_feature, monitors=monitors)

    def build_optimizer(self) -> torch.optim.SGD:
        """SGD with momentum; the predictor in its own group so its lr can stay fixed."""
        encoder = [*self.backbone.parameters(), *self.projector.parameters()]
        return torch.optim.SGD([
            {"params": encoder, "fix_lr": False},
            {"params": list(self.predictor.parameters()), "fix_lr": self.config.fix_pred_lr},
        ], lr=float(self.schedules.lr[0]), momentum=self.config.momentum,
            weight_decay=self.config.weight_decay)

    def encoders(self) -> dict[str, nn.Module]:
        """One backbone: the stop-gradient branch is the same network, so both roles give it."""
        return {"teacher": self.backbone, "student": self.backbone}
