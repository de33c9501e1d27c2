"""Self-distillation methods (plain PyTorch): DINO-2 and SimSiam, their heads, losses,
schedules and collapse monitors, and ``train_step``, the body of the training loop.

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> backbone, dim = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    >>> method = build_method("dino", backbone, dim, epochs=5, iters_per_epoch=10,
    ...                       batch_size=64, out_dim=1024, hidden_dim=512,
    ...                       bottleneck_dim=128, warmup_epochs=1)
    >>> optimizer = method.build_optimizer()
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from adasim_ray.methods.dino import DINO, DINOConfig
from adasim_ray.methods.simsiam import SimSiam, SimSiamConfig
from adasim_ray.methods.step import Method, StepOutput, train_step

__all__ = ["DINO", "METHODS", "DINOConfig", "Method", "SimSiam", "SimSiamConfig",
           "StepOutput", "build_method", "train_step"]

#: name -> (method class, its config class)
METHODS: dict[str, tuple[type[nn.Module], type]] = {
    "dino": (DINO, DINOConfig),
    "simsiam": (SimSiam, SimSiamConfig),
}


def build_method(name: str, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int, **config: Any) -> nn.Module:
    """Build ``DINO`` or ``SimSiam`` by name; ``config`` holds fields of its config class.

    Raises:
        ValueError: unknown method name or unknown config field (naming the valid ones).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    cls, config_cls = METHODS[name]
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}; "
                         f"valid fields: {sorted(valid)}")
    return cls(backbone, feat_dim, epochs=epochs, iters_per_epoch=iters_per_epoch,
               batch_size=batch_size, config=config_cls(**config))
