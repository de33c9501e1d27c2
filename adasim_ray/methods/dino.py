"""DINO-2: DINO (Caron et al., 2021) with the two global crops only, the base method of the
paper's Section 4.1 (multi-crop is left out, "Limitations", Section 5).

A student g_s = head_s o backbone_s and a teacher g_t with the same architecture whose
weights are an EMA of the student's (theta_t <- lambda theta_t + (1 - lambda) theta_s,
lambda following a cosine from 0.996 to 1). With AdaSim the views are t(x_i) (anchor) and
t'(x_j*) (partner, Eq. 10); the loss is ``DINOLoss`` on that pair; the cache stores the
teacher backbone feature of the anchor view.

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> from adasim_ray.methods.step import train_step
    >>> backbone, dim = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    >>> dino = DINO(backbone, dim, epochs=10, iters_per_epoch=100, batch_size=128,
    ...             config=DINOConfig(out_dim=4096, hidden_dim=512, bottleneck_dim=128))
    >>> optimizer = dino.build_optimizer()
    >>> anchor, partner = torch.randn(2, 128, 1, 28, 28)
    >>> out = train_step(dino, optimizer, anchor, partner, it=0)
    >>> out.anchor_feature.shape
    torch.Size([128, 96])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adasim_ray.methods.base import Branch, MomentumMethod, Schedules
from adasim_ray.methods.heads import DINOHead
from adasim_ray.methods.losses import DINOLoss
from adasim_ray.methods.monitors import mean_entropy, std_of_l2_normalized
from adasim_ray.methods.ranges import check_ranges
from adasim_ray.methods.registry import register_method
from adasim_ray.methods.schedules import cosine_schedule, scaled_lr, teacher_temp_schedule
from adasim_ray.methods.step import StepOutput, schedule_at
from adasim_ray.methods.teacher import clip_gradients

__all__ = ["DINO", "DINOConfig", "DINOSchedules"]


@dataclass(frozen=True)
class DINOConfig:
    """DINO's hyper-parameters (the YAML section ``dino:``); the defaults are those of DINO
    (Caron et al., 2021, Appendix) with which the AdaSim paper trains DINO-2 (Section 4.1,
    implementation details).

    Attributes:
        out_dim: K, number of prototypes (65536). Small runs: 1024-4096.
        hidden_dim: width of the head's hidden layers (2048).
        bottleneck_dim: width before the L2-normalisation (256).
        use_bn_in_head: BatchNorm in the head's MLP (off, as DINO's default).
        norm_last_layer: fix the last layer's weight-norm magnitude to 1 (on; DINO advises
            off for better ViT-S results at the risk of instability).
        student_temp: T_s (0.1).
        teacher_temp: final T_t (0.04; DINO tunes up to 0.07 with a warm-up).
        warmup_teacher_temp: T_t at epoch 0 (0.04). Lower than ``teacher_temp`` with a
            warm-up if the loss starts stuck at log(out_dim).
        warmup_teacher_temp_epochs: epochs of linear T_t warm-up (0 = none; DINO uses 30).
        center_momentum: m of the centre EMA (0.9).
        momentum_teacher: start of the teacher EMA momentum, cosine to 1 (0.996). Short runs
            need a lower value (e.g. 0.99) so the teacher moves at all.
        base_lr: lr per 256 images; the peak lr is ``base_lr * batch / 256`` (5e-4).
        min_lr: lr at the end of the cosine (1e-6).
        warmup_epochs: epochs of linear lr warm-up from 0 (10).
        weight_decay: weight decay at the start, cosine to ``weight_decay_end`` (0.04).
        weight_decay_end: final weight decay (0.4).
        clip_grad: max L2 norm of *each parameter's* gradient, as DINO's clip_gradients
            (3.0); 0 disables clipping.
        freeze_last_layer: epochs during which the head's last layer gets no update (1).
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    use_bn_in_head: bool = False
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    base_lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer: int = 1

    def __post_init__(self) -> None:
        check_ranges(
            self,
            positive=("out_dim", "hidden_dim", "bottleneck_dim", "student_temp", "teacher_temp",
                      "warmup_teacher_temp", "base_lr"),
            non_negative=("min_lr", "warmup_epochs", "weight_decay", "weight_decay_end",
                          "clip_grad", "freeze_last_layer", "warmup_teacher_temp_epochs"),
            unit=("center_momentum", "momentum_teacher"),
        )


@dataclass(frozen=True, kw_only=True)
class DINOSchedules(Schedules):
    """Per-iteration arrays, all of length ``epochs * iters_per_epoch``: the shared ones
    and the teacher temperature's warm-up."""

    teacher_temp: np.ndarray

    @classmethod
    def build(cls, config: DINOConfig, *, epochs: int, iters_per_epoch: int,
              batch_size: int) -> DINOSchedules:
        shape = {"epochs": epochs, "iters_per_epoch": iters_per_epoch}
        return cls(
            lr=cosine_schedule(scaled_lr(config.base_lr, batch_size), config.min_lr,
                               warmup_epochs=config.warmup_epochs, **shape),
            weight_decay=cosine_schedule(config.weight_decay, config.weight_decay_end, **shape),
            momentum=cosine_schedule(config.momentum_teacher, 1.0, **shape),
            teacher_temp=teacher_temp_schedule(
                config.teacher_temp, config.warmup_teacher_temp,
                warmup_epochs=config.warmup_teacher_temp_epochs, **shape),
        )


@register_method("dino", DINOConfig)
class DINO(MomentumMethod):
    """DINO-2 with an EMA teacher, centring and sharpening.

    Args:
        backbone: maps (B, C, S, S) to (B, feat_dim), e.g. from ``build_backbone``. The
            teacher gets a deep copy; neither is re-initialised.
        feat_dim: the backbone's feature dimension.
        epochs, iters_per_epoch, batch_size: the run's length and the global batch size,
            which fix the per-iteration schedules (lr scaled by batch / 256).
        config: hyper-parameters.

    ``state_dict()`` holds student, teacher and the centre; the optimiser is separate.
    """

    monitors = ("loss", "z_std", "teacher_entropy", "feature_std", "teacher_temp", "momentum")
    optimizer_slots = 2  # AdamW's two moments

    def __init__(self, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int,
                 config: DINOConfig | None = None) -> None:
        config = config if config is not None else DINOConfig()
        head = DINOHead(feat_dim, config.out_dim, config.hidden_dim, config.bottleneck_dim,
                        use_bn=config.use_bn_in_head, norm_last_layer=config.norm_last_layer)
        # The teacher starts equal to the student (DINO loads the student's weights into it).
        super().__init__(Branch(backbone, head), feat_dim, epochs=epochs,
                         iters_per_epoch=iters_per_epoch)
        self.config = config
        self.loss_fn = DINOLoss(config.out_dim, config.student_temp, config.center_momentum)
        self.schedules = DINOSchedules.build(config, epochs=epochs,
                                             iters_per_epoch=iters_per_epoch,
                                             batch_size=batch_size)

    # -- the step ---------------------------------------------------------------------------
    def forward(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
                it: int) -> StepOutput:
        """Loss of the pair (t(x_i), t'(x_j*)) and the teacher feature of t(x_i).

        Both views go through student and teacher in one batch (as DINO does for its two
        global crops, so BatchNorm sees both views).
        """
        self.check_pair(anchor_view, partner_view)
        batch = anchor_view.shape[0]
        teacher_temp = schedule_at(self.schedules.teacher_temp, it, "teacher temperature")
        views = torch.cat([anchor_view, partner_view])
        _, student_out = self.student(views)
        with torch.no_grad():
            teacher_feature, teacher_out = self.teacher(views)
        teacher_probs = self.loss_fn.teacher_probs(teacher_out, teacher_temp)
        loss = self.loss_fn.cross_entropy(student_out, teacher_probs)
        self.loss_fn.update_center(teacher_out)

        anchor_feature = teacher_feature[:batch].detach().float()
        monitors = {
            "loss": loss.detach(),
            "z_std": 0.5 * (std_of_l2_normalized(student_out[:batch])
                            + std_of_l2_normalized(student_out[batch:])),
            "teacher_entropy": mean_entropy(teacher_probs),
            "feature_std": std_of_l2_normalized(anchor_feature),
            "teacher_temp": teacher_temp,
            "momentum": self.momentum_at(it),
        }
        return StepOutput(loss=loss, anchor_feature=anchor_feature, monitors=monitors)

    # -- optimisation -----------------------------------------------------------------------
    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the student; biases and norm parameters (1-D) get no weight decay.

        The lr and the weight decay of the ``regularized`` group are set every iteration by
        ``apply_schedules``.
        """
        regularized, not_regularized = [], []
        for name, param in self.student.named_parameters():
            if not param.requires_grad:
                continue
            if name.endswith(".bias") or param.ndim == 1:
                not_regularized.append(param)
            else:
                regularized.append(param)
        lr = float(self.schedules.lr[0])
        return torch.optim.AdamW([
            {"params": regularized, "regularized": True,
             "weight_decay": float(self.schedules.weight_decay[0])},
            {"params": not_regularized, "regularized": False, "weight_decay": 0.0},
        ], lr=lr)

    def prepare_gradients(self, it: int) -> None:
        """Clip each parameter's gradient to norm ``clip_grad`` (DINO clips per parameter,
        not globally), then drop the last layer's gradients in the first
        ``freeze_last_layer`` epochs, which DINO found to help the first epoch."""
        if self.config.clip_grad > 0:
            clip_gradients(self.student.parameters(), self.config.clip_grad)
        if it // self.iters_per_epoch < self.config.freeze_last_layer:
            for param in self.student.head.last_layer.parameters():
                param.grad = None  # AdamW skips parameters without a gradient
