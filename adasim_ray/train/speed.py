"""The settings a GPU worker trains with that users expect without asking: TF32 matmuls and
convolutions (float32 weights, tensor-core speed), cuDNN's autotuner (the views' shape never
changes within a run), and channels-last memory for ConvNets. A CPU worker changes nothing.

The similarity cache is unaffected: its product runs with TF32 off (``engine/cache.py``), so
that partners on a GPU equal partners on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["configure_gpu", "is_convnet"]


def is_convnet(backbone: nn.Module) -> bool:
    """A backbone made of convolutions (a ResNet, the CPU presets' ConvNet), not a ViT whose
    only convolution is its patch embedding."""
    return sum(isinstance(m, nn.Conv2d) for m in backbone.modules()) > 1


def configure_gpu(method: nn.Module, backbone: nn.Module, device: torch.device) -> bool:
    """On a CUDA ``device``: TF32 on for matmuls and convolutions, cuDNN benchmark on, and a
    ConvNet ``method`` in channels-last memory. Returns whether the views should be made
    channels-last too (the caller converts them)."""
    if device.type != "cuda":
        return False
    torch.set_float32_matmul_precision("high")  # TF32 for float32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    if not is_convnet(backbone):
        return False
    method.to(memory_format=torch.channels_last)
    return True
