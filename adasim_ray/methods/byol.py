"""BYOL (Grill et al., 2020): the momentum-encoder self-distillation that the paper's
Section 3 abstracts ("a student learns to predict the representation of a teacher whose
weights are a moving average of the student's").

An online network (backbone + projector, the student) with a predictor q, and a target
network (backbone + projector, the teacher) whose weights are an EMA of the online ones,
tau following a cosine from 0.996 to 1 (Section 3.1). The loss of a pair of views is the
normalised squared error between the online prediction of one view and the target projection
of the other, symmetrised (Eq. 2):

    l(p, z) = || p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)
    L = ( l(q(g_s(v)), g_t(v')) + l(q(g_s(v')), g_t(v)) ) / 2

With AdaSim the views are t(x_i) (anchor) and t'(x_j*) (partner, Eq. 10); the cache stores
the target backbone's feature of the anchor view, as for DINO.

Differences from the paper, stated: SGD with momentum (or AdamW) instead of LARS (which torch
does not ship; solo-learn and lightly train BYOL with SGD at small scale), and both views go through
each network in one batch (as DINO's two global crops), so BatchNorm sees both.

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> from adasim_ray.methods.step import train_step
    >>> backbone, dim = build_backbone("cnn_tiny_cpu", image_size=28, in_chans=1)
    >>> byol = BYOL(backbone, dim, epochs=10, iters_per_epoch=100, batch_size=128,
    ...             config=BYOLConfig(proj_hidden_dim=256, proj_dim=64, pred_hidden_dim=256))
    >>> optimizer = byol.build_optimizer()
    >>> anchor, partner = torch.randn(2, 128, 1, 28, 28)
    >>> out = train_step(byol, optimizer, anchor, partner, it=0)
    >>> out.anchor_feature.shape == (128, dim), 0.0 <= out.monitors["loss"] <= 4.0
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adasim_ray.methods.base import Branch, MomentumMethod, Schedules
from adasim_ray.methods.heads import ProjectionHead, mlp_blocks
from adasim_ray.methods.monitors import std_of_l2_normalized
from adasim_ray.methods.ranges import check_ranges
from adasim_ray.methods.registry import register_method
from adasim_ray.methods.schedules import cosine_schedule, scaled_lr
from adasim_ray.methods.step import StepOutput

__all__ = ["BYOL", "BYOLConfig", "BYOLPredictionHead", "BYOLProjectionHead", "byol_loss"]


#: The optimisers BYOL trains with here (the paper's LARS is not in torch).
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class BYOLConfig:
    """BYOL's hyper-parameters (the YAML section ``byol:``); the widths and the momentum are
    the paper's (Section 3.3, Appendix C), the optimiser SGD (see the module docstring).

    Attributes:
        proj_hidden_dim: hidden width of projector and predictor (4096).
        proj_dim: output width of the projector, and of the predictor (256).
        pred_hidden_dim: hidden width of the predictor (4096).
        momentum_teacher: tau_base, start of the target's EMA momentum, cosine to 1 (0.996).
            Short runs need a lower value (e.g. 0.99) so the target moves at all.
        base_lr: lr per 256 images; the peak lr is ``base_lr * batch / 256`` (0.05).
        min_lr: lr at the end of the cosine (0).
        warmup_epochs: epochs of linear lr warm-up (10, as BYOL).
        momentum: SGD momentum (0.9).
        weight_decay: on weights, not on biases and norm parameters (1.5e-6, BYOL's with
            LARS; SGD recipes use 1e-5 to 1e-4, AdamW ones 0.04 as DINO).
        optimizer: ``sgd`` (with ``momentum``) or ``adamw`` (DINO's optimiser, which small
            CPU runs train faster with; its ``base_lr`` is of DINO's order, 5e-4).
    """

    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    momentum_teacher: float = 0.996
    base_lr: float = 0.05
    min_lr: float = 0.0
    warmup_epochs: float = 10
    momentum: float = 0.9
    weight_decay: float = 1.5e-6
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: must be one of {list(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        check_ranges(self, positive=("proj_hidden_dim", "proj_dim", "pred_hidden_dim", "base_lr"),
                     non_negative=("min_lr", "warmup_epochs", "weight_decay"),
                     unit=("momentum_teacher",), unit_open=("momentum",))


class BYOLProjectionHead(ProjectionHead):
    """BYOL's projector g: ``in_dim -> 4096 -> 256``, BN + ReLU on the hidden layer only."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__(mlp_blocks(in_dim, hidden_dim, out_dim))


class BYOLPredictionHead(ProjectionHead):
    """BYOL's predictor q: the projector's shape, ``dim -> 4096 -> dim``."""

    def __init__(self, dim: int = 256, hidden_dim: int = 4096) -> None:
        super().__init__(mlp_blocks(dim, hidden_dim, dim))


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(p, z)`` averaged over the batch (BYOL's Eq. 2); the target without
    gradient."""
    cosine = F.cosine_similarity(prediction, target.detach(), dim=-1)
    return (2.0 - 2.0 * cosine).mean()


@register_method("byol", BYOLConfig)
class BYOL(MomentumMethod):
    """BYOL: an online network with a predictor, a target network updated by EMA.

    Args:
        backbone: maps (B, C, S, S) to (B, feat_dim), e.g. from ``build_backbone``. The
            target gets a deep copy.
        feat_dim: the backbone's feature dimension.
        epochs, iters_per_epoch, batch_size: fix the per-iteration schedules.
        config: hyper-parameters.

    ``encoders()``: ``teacher`` is the target backbone (evaluated and cached), ``student``
    the online one.
    """

    monitors = ("loss", "z_std", "feature_std", "momentum")

    @property
    def optimizer_slots(self) -> int:  # type: ignore[override]
        return 2 if self.config.optimizer == "adamw" else 1

    def __init__(self, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int,
                 config: BYOLConfig | None = None) -> None:
        config = config if config is not None else BYOLConfig()
        projector = BYOLProjectionHead(feat_dim, config.proj_hidden_dim, config.proj_dim)
        super().__init__(Branch(backbone, projector), feat_dim, epochs=epochs,
                         iters_per_epoch=iters_per_epoch)
        self.config = config
        self.predictor = BYOLPredictionHead(config.proj_dim, config.pred_hidden_dim)
        shape = {"epochs": epochs, "iters_per_epoch": iters_per_epoch}
        self.schedules = Schedules(
            lr=cosine_schedule(scaled_lr(config.base_lr, batch_size), config.min_lr,
                               warmup_epochs=config.warmup_epochs, **shape),
            momentum=cosine_schedule(config.momentum_teacher, 1.0, **shape),
        )

    def forward(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
                it: int) -> StepOutput:
        """Loss of the pair (t(x_i), t'(x_j*)) and the target backbone's feature of t(x_i)."""
        self.check_pair(anchor_view, partner_view)
        batch = anchor_view.shape[0]
        momentum = self.momentum_at(it)  # fail early past the schedule
        views = torch.cat([anchor_view, partner_view])
        _, online = self.student(views)
        p0, p1 = self.predictor(online).chunk(2)
        with torch.no_grad():
            target_feature, target = self.teacher(views)
        t0, t1 = target.chunk(2)
        loss = 0.5 * (byol_loss(p0, t1) + byol_loss(p1, t0))

        anchor_feature = target_feature[:batch].detach().float()
        monitors = {
            "loss": loss.detach(),
            "z_std": 0.5 * (std_of_l2_normalized(online[:batch])
                            + std_of_l2_normalized(online[batch:])),
            "feature_std": std_of_l2_normalized(anchor_feature),
            "momentum": momentum,
        }
        return StepOutput(loss=loss, anchor_feature=anchor_feature, monitors=monitors)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD with momentum (or AdamW) over the online network and the predictor; biases and
        norm parameters (1-D) get no weight decay (as LARS excludes them in BYOL)."""
        regularized, not_regularized = [], []
        for module in (self.student, self.predictor):
            for name, param in module.named_parameters():
                if not param.requires_grad:
                    continue
                (not_regularized if name.endswith(".bias") or param.ndim == 1
                 else regularized).append(param)
        groups = [{"params": regularized, "weight_decay": self.config.weight_decay},
                  {"params": not_regularized, "weight_decay": 0.0}]
        lr = float(self.schedules.lr[0])
        if self.config.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=self.config.momentum)
