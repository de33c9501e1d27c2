"""Tiny models shared by the method tests: small enough that a step takes milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasim_ray.backbones import build_backbone
from adasim_ray.methods import DINO, DINOConfig, SimSiam, SimSiamConfig

IMAGE_SIZE = 8
EPOCHS = 3
ITERS_PER_EPOCH = 2
BATCH = 4


def tiny_vit() -> tuple[nn.Module, int]:
    return build_backbone("vit_tiny_cpu", image_size=IMAGE_SIZE, in_chans=1,
                          embed_dim=16, depth=1, num_heads=2)


def tiny_dino(**config: object) -> DINO:
    backbone, dim = tiny_vit()
    defaults: dict[str, object] = {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8,
                                   "warmup_epochs": 1, "momentum_teacher": 0.9}
    return DINO(backbone, dim, epochs=EPOCHS, iters_per_epoch=ITERS_PER_EPOCH,
                batch_size=BATCH, config=DINOConfig(**{**defaults, **config}))


def tiny_simsiam(**config: object) -> SimSiam:
    backbone, dim = build_backbone("resnet_tiny_cpu", image_size=IMAGE_SIZE, in_chans=1,
                                   channels=(8, 8, 8, 8))
    defaults: dict[str, object] = {"proj_hidden_dim": 16, "proj_dim": 16, "pred_dim": 8}
    return SimSiam(backbone, dim, epochs=EPOCHS, iters_per_epoch=ITERS_PER_EPOCH,
                   batch_size=BATCH, config=SimSiamConfig(**{**defaults, **config}))


@pytest.fixture
def views() -> tuple[torch.Tensor, torch.Tensor]:
    """An (anchor, partner) pair of view batches, fixed by a local generator."""
    gen = torch.Generator().manual_seed(123)
    shape = (BATCH, 1, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


@pytest.fixture
def make_dino():
    """Factory for a tiny DINO (keyword arguments are DINOConfig fields)."""
    return tiny_dino


@pytest.fixture
def make_simsiam():
    """Factory for a tiny SimSiam on a tiny timm ResNet (has BatchNorm)."""
    return tiny_simsiam
