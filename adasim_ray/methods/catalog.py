"""Every method of the package, registered: importing this module imports each module of
``adasim_ray/methods/`` (so a method's file registers itself by being there) and gathers
what ``adasim_ray.methods`` offers. The package itself imports it on first use of one of its
names, so that ``adasim_ray.methods.roles`` stays importable without torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from torch import nn

from adasim_ray.methods.base import MomentumMethod, SelfDistillationMethod
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
           "MomentumMethod", "SelfDistillationMethod", "SimSiam", "SimSiamConfig",
           "StepOutput", "build_method", "build_registered", "method_spec", "register_method",
           "train_step"]

#: The method of a config that names none.
DEFAULT_METHOD = "dino"


def _import_method_modules() -> None:
    """Import every module of this package: each method's file registers itself."""
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{package}.{info.name}")


_import_method_modules()


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
