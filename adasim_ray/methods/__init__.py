"""Self-distillation methods (plain PyTorch): DINO-2, SimSiam and the others of this folder,
their shared base (``base.py``), heads, losses, schedules and collapse monitors, and
``train_step``, the body of the training loop.

A method is one file here that registers itself with its config section (``registry.py``);
``catalog.py`` imports every file of the folder, so nothing else lists the methods. The
names below are loaded on first use (``adasim_ray.methods.roles``, which the command-line
parser reads, needs no torch).

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> backbone, dim = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    >>> method = build_method("dino", backbone, dim, epochs=5, iters_per_epoch=10,
    ...                       batch_size=64, out_dim=1024, hidden_dim=512,
    ...                       bottleneck_dim=128, warmup_epochs=1)
    >>> optimizer = method.build_optimizer()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adasim_ray.methods.catalog import (
        DEFAULT_METHOD,
        DINO,
        METHODS,
        DINOConfig,
        Method,
        MethodSpec,
        MomentumMethod,
        SelfDistillationMethod,
        SimSiam,
        SimSiamConfig,
        StepOutput,
        build_method,
        build_registered,
        method_spec,
        register_method,
        train_step,
    )

__all__ = ["DEFAULT_METHOD", "DINO", "METHODS", "DINOConfig", "Method", "MethodSpec",
           "MomentumMethod", "SelfDistillationMethod", "SimSiam", "SimSiamConfig",
           "StepOutput", "build_method", "build_registered", "method_spec", "register_method",
           "train_step"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from adasim_ray.methods import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
