"""adasim-ray: AdaSim (adaptive similarity bootstrapping for self-distillation) on Ray.

``adasim_ray.load_backbone(DIR)`` rebuilds a backbone written by ``adasim-ray export``
(imported on first use: ``import adasim_ray`` loads neither torch nor Ray)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_backbone"]


def __getattr__(name: str) -> Any:
    if name == "load_backbone":
        from adasim_ray.export import load_backbone

        return load_backbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
