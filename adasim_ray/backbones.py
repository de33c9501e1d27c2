"""Backbones by name, built through timm, returning one pooled feature per image.

The paper (Section 4.1) pretrains ViT-S/16 and ResNet-50; its cache and the k-NN protocol use
the *backbone* feature, so every backbone here is a timm model built with ``num_classes=0``:

* ViT (``global_pool='token'``): the [CLS] token after the final LayerNorm, exactly the
  feature DINO evaluates (``forward_features`` applies ``norm``; ``fc_norm`` is the identity
  for token pooling, so ``model(x) == model.forward_features(x)[:, 0]``).
* ResNet: the global-average pooled output of the last stage.

The feature dimension is read from the model (``head_hidden_size``, the width of the pooled
pre-logits that timm returns when ``num_classes=0``; it equals ``num_features`` for the
families used here: 384 for ViT-S, 768 for ViT-B, 2048 for ResNet-50), never hard-coded.

Small CPU presets (for 2 CPU cores and 28 x 28 images, e.g. MNIST); the first two are timm
models configured small, the third is the one backbone not from timm:

========================  ===============================================================
``vit_tiny_cpu``          timm ``VisionTransformer``: patch 4, width 96, depth 4, 3 heads,
                          MLP ratio 4; 28 x 28 gives 7 x 7 = 49 patches + [CLS].
                          Meant for images up to about 64 px (tokens grow as (S / 4)^2).
``resnet_tiny_cpu``       timm ``ResNet`` with ``BasicBlock`` stages [1, 1, 1, 1] of widths
                          (32, 64, 128, 256) and a 3 x 3 stride-1 stem conv (then timm's
                          max-pool), so a 28 x 28 input enters the stages at 14 x 14 and
                          reaches the last one at 2 x 2 rather than 1 x 1.
``cnn_tiny_cpu``          a plain ConvNet (3 x 3 conv + BatchNorm + ReLU, widths 32, 64,
                          128, 128, a 2 x 2 max-pool between stages, global average pool;
                          240k parameters). timm has no plain small ConvNet. It is the
                          demo's: it is the only one of the three that learns clearly above
                          its random init within the demo's budget on 2 CPU cores
                          (measured, bare loop, 9 epochs of 3,000 MNIST images, k-NN on
                          2,000 / 500: 0.80 -> 0.88; resnet_tiny_cpu 0.43 -> 0.53 in twice
                          the time; vit_tiny_cpu 0.32 -> 0.32).
========================  ===============================================================

Examples:
    >>> backbone, dim = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    >>> dim
    96
    >>> backbone, dim = build_backbone("resnet50", image_size=224, in_chans=3)
    >>> dim
    2048
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import timm
from torch import nn

__all__ = ["CPU_PRESETS", "PAPER_BACKBONES", "build_backbone"]

#: The backbones of the paper's runs (Tables 2 and 3); any other timm name works as well.
PAPER_BACKBONES: tuple[str, ...] = ("resnet50", "vit_small_patch16_224", "vit_base_patch16_224")

# Images at or below this size get the small ResNet stem by default: the ImageNet stem
# (7 x 7 stride 2 + max-pool) divides by 4 before the first stage, which leaves a 28 x 28
# digit at 1 x 1 in the last stage. The max-pool is kept: without it the first stage runs
# at 28 x 28 and a step costs 2.5x more CPU time for the tiny preset (measured).
_SMALL_STEM_MAX_SIZE = 64


@dataclass(frozen=True)
class _Preset:
    """A small backbone: a timm architecture plus the keyword arguments that shrink it."""

    timm_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # A preset not from timm: builder(in_chans, **kwargs) -> (module, feat_dim).
    builder: Callable[..., tuple[nn.Module, int]] | None = None


def plain_convnet(in_chans: int, widths: Sequence[int] = (32, 64, 128, 128)
                  ) -> tuple[nn.Module, int]:
    """Stages of 3 x 3 conv (no bias) + BatchNorm + ReLU, a 2 x 2 max-pool between them, then a
    global average pool: (B, C, S, S) -> (B, widths[-1])."""
    layers: list[nn.Module] = []
    channels = in_chans
    for k, width in enumerate(widths):
        if k:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), channels


CPU_PRESETS: dict[str, _Preset] = {
    "vit_tiny_cpu": _Preset(
        timm_name="vit_tiny_patch16_224",
        kwargs={"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3},
        description="timm ViT, patch 4, width 96, depth 4, 3 heads (28x28 images)",
    ),
    "resnet_tiny_cpu": _Preset(
        timm_name="resnet18",
        kwargs={"layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256), "small_stem": True},
        description="timm ResNet, BasicBlock [1,1,1,1], widths 32-256, 3x3 stem (28x28 images)",
    ),
    "cnn_tiny_cpu": _Preset(
        timm_name="",
        builder=plain_convnet,
        description="plain ConvNet, widths 32-128, not from timm (the demo's, 28x28 images)",
    ),
}


def _unknown_backbone(name: str) -> ValueError:
    presets = ", ".join(f"{k} ({v.description})" for k, v in CPU_PRESETS.items())
    return ValueError(
        f"unknown backbone {name!r}: not a CPU preset and not a timm model name. "
        f"CPU presets: {presets}. Paper backbones: {', '.join(PAPER_BACKBONES)}. "
        "Any other name from timm.list_models() also works."
    )


def _is_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def _use_small_stem(model: nn.Module) -> None:
    """Swap a timm ResNet's 7 x 7 stride-2 stem conv for a 3 x 3 stride-1 conv.

    The new conv keeps the old conv's output width so that ``bn1`` and the first stage still
    fit; the input-side down-sampling goes from x4 to x2 (the max-pool's).
    """
    old: nn.Conv2d = model.conv1  # type: ignore[assignment]
    model.conv1 = nn.Conv2d(
        old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")


def _create(name: str, image_size: int, in_chans: int, kwargs: dict[str, Any]) -> nn.Module:
    common = {"pretrained": False, "num_classes": 0, "in_chans": in_chans}
    try:
        return timm.create_model(name, img_size=image_size, **common, **kwargs)
    except TypeError as err:
        # Convolutional families take any input size and reject `img_size`; retry without it.
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **common, **kwargs)


def build_backbone(
    name: str, *, image_size: int, in_chans: int, **overrides: Any
) -> tuple[nn.Module, int]:
    """Build a randomly initialised timm backbone that maps (B, C, S, S) to (B, feat_dim).

    Args:
        name: a CPU preset (see ``CPU_PRESETS``) or any timm model name, e.g. one of
            ``PAPER_BACKBONES``. Weights are never downloaded (``pretrained=False``).
        image_size: side S of the square input; passed to timm as ``img_size`` where the
            architecture needs it (ViT position embeddings), ignored by convolutional nets.
        in_chans: 1 for grey images (MNIST), 3 for RGB.
        **overrides: timm keyword arguments that replace the preset's or the model's own,
            e.g. ``patch_size=4`` to run ``vit_small_patch16_224`` on 28 x 28 images, or
            ``depth=6``. One extra key is ours: ``small_stem`` (ResNet family only) replaces
            the 7 x 7 stride-2 stem conv by a 3 x 3 stride-1 conv; by default it is on for
            presets that ask for it and for ResNets with ``image_size <= 64``.

    Returns:
        ``(module, feat_dim)`` where ``module(x)`` has shape ``(B, feat_dim)``: the ViT
        [CLS] token after the final norm, or the pooled ResNet feature.

    Raises:
        ValueError: if ``name`` is neither a preset nor a timm model, naming the presets.
    """
    if image_size < 1 or in_chans < 1:
        raise ValueError(f"backbone {name!r}: image_size and in_chans must be >= 1, "
                         f"got image_size={image_size}, in_chans={in_chans}")
    preset = CPU_PRESETS.get(name)
    if preset is not None and preset.builder is not None:
        return preset.builder(in_chans, **{**preset.kwargs, **overrides})
    timm_name = preset.timm_name if preset is not None else name
    if not timm.is_model(timm_name):
        raise _unknown_backbone(name)
    kwargs = {**(preset.kwargs if preset is not None else {}), **overrides}
    small_stem = kwargs.pop("small_stem", None)

    model = _create(timm_name, image_size, in_chans, kwargs)

    if small_stem is None:
        small_stem = _is_resnet_stem(model) and image_size <= _SMALL_STEM_MAX_SIZE
    if small_stem:
        if not _is_resnet_stem(model):
            raise ValueError(f"backbone {name!r}: small_stem=True needs a ResNet-style "
                             "model with `conv1` and `maxpool`")
        _use_small_stem(model)

    # timm >= 0.9 names the width of what forward() returns with num_classes=0
    # `head_hidden_size`; older models only have `num_features`.
    feat_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model, feat_dim
