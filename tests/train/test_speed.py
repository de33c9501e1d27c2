"""GPU speed settings: which backbones are ConvNets (channels-last), a CPU worker left as it
is, and DINO's last layer in float32 under autocast."""

from __future__ import annotations

import torch

from adasim_ray.backbones import build_backbone
from adasim_ray.methods.heads import DINOHead
from adasim_ray.train.speed import configure_gpu, is_convnet


def test_convnets_and_vits_are_told_apart():
    cnn, _ = build_backbone("cnn_tiny_cpu", image_size=28, in_chans=1)
    resnet, _ = build_backbone("resnet_tiny_cpu", image_size=28, in_chans=1)
    vit, _ = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    assert is_convnet(cnn) and is_convnet(resnet) and not is_convnet(vit)


def test_a_cpu_worker_changes_nothing():
    cnn, _ = build_backbone("cnn_tiny_cpu", image_size=28, in_chans=1)
    before = torch.get_float32_matmul_precision()
    assert configure_gpu(cnn, cnn, torch.device("cpu")) is False
    assert torch.get_float32_matmul_precision() == before
    conv = next(m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # not converted to channels-last


def test_dino_logits_stay_float32_under_autocast():
    head = DINOHead(in_dim=16, out_dim=64, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(4, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = head(x)
        hidden = head.mlp(x)
    assert logits.dtype == torch.float32 and hidden.dtype == torch.bfloat16
