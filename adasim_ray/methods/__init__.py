"""Self-distillation methods (plain PyTorch): DINO-2 and SimSiam, their heads, losses,
schedules and collapse monitors, and ``train_step``, the body of the training loop.

Each method registers itself with its config section (``registry.py``); importing this package
registers the built-in ones.

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

# The built-in methods register themselves when their modules are imported.
from adasim_ray.methods.dino import DINO, DINOConfig
from adasim_ray.methods.registry import (
    METHODS,
    MethodSpec,
    build_registered,
    method_spec,
    register_method,
)
from adasim_ray.methods.simsiam import SimSiam, SimSiamConfig
from adasim_ray.methods.step import Method, StepOutput, train_step

__all__ = ["DEFAULT_METHOD", "DINO", "METHODS", "DINOConfig", "Method", "MethodSpec",
           "SimSiam", "SimSiamConfig", "StepOutput", "build_method", "build_registered",
           "method_spec", "register_method", "train_step"]

#: The method of a config that names none.
DEFAULT_METHOD = "dino"


def build_method(name: str, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int, **config: Any) -> nn.Module:
    """Build a registered method by name; ``config`` holds fields of its config section.

    Raises:
        ValueError: unknown method name or unknown config field (naming the valid ones).
    """
    spec = method_spec(name)
    valid = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"{spec.config.__name__} has no field(s) {unknown}; "
                         f"valid fields: {sorted(valid)}")
    return build_registered(name, backbone, feat_dim, spec.config(**config), epochs=epochs,
                            iters_per_epoch=iters_per_epoch, batch_size=batch_size)
