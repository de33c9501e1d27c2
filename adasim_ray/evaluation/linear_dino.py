"""DINO's linear evaluation protocol (``eval_linear.py`` of Caron et al., 2021), where the
paper's linear numbers come from: ``adasim-ray eval --linear-protocol dino``.

A linear layer on the frozen backbone is trained with SGD on augmented training images and
tested on centre crops:

- training views: a random resized crop of scale (0.08, 1) to the eval size and a horizontal
  flip, nothing photometric (the caller's ``augment``); test views: the eval transform;
- features: for a ViT, the [CLS] tokens of the last ``n_last_blocks`` blocks after the final
  norm, concatenated, with the patch tokens' mean of the last block appended when
  ``avgpool_patchtokens`` (DINO: 4 blocks for ViT-S, 1 block + average pool for ViT-B); for
  any other backbone its pooled output. Not normalised;
- the layer: ``nn.Linear`` with weights from N(0, 0.01) and zero bias, SGD with momentum 0.9
  and no weight decay, lr = base lr x batch / 256, cosine-annealed to 0 over the epochs;
- DINO sweeps the base lr and reports the best: one layer per base lr in ``lrs`` is trained
  side by side on the same batches (the backbone runs once per batch for all of them).

Differences from DINO's script, stated: one process on one device (DINO trains on 8 GPUs
with DDP, batch 128 per GPU); the test accuracy is measured once, after the last epoch (DINO
evaluates every ``val_freq`` epochs and reports the best it saw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adasim_ray.evaluation.features import FeatureSource, iter_chunks, source_labels
from adasim_ray.evaluation.progress import Progress, clock

#: Base learning rates (per 256 images) tried side by side; DINO's default is 1e-3.
DINO_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

Augment = Callable[[list[np.ndarray], torch.Generator], torch.Tensor]
Transform = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class DinoLinearSettings:
    """The protocol's knobs (DINO's defaults at ImageNet scale)."""

    epochs: int = 100
    lrs: tuple[float, ...] = DINO_LRS
    batch_size: int = 256
    n_last_blocks: int | None = None  # None: DINO's choice for the backbone (see vit_layout)
    avgpool_patchtokens: bool | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"linear epochs must be >= 1, got {self.epochs}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"linear lrs must be positive numbers, got {self.lrs}")
        if self.batch_size < 1:
            raise ValueError(f"linear batch size must be >= 1, got {self.batch_size}")
        if self.n_last_blocks is not None and self.n_last_blocks < 1:
            raise ValueError(f"linear blocks must be >= 1, got {self.n_last_blocks}")


def vit_layout(backbone: nn.Module, settings: DinoLinearSettings) -> tuple[int, bool] | None:
    """(blocks, average pool) of the features of a ViT (a module with timm's
    ``get_intermediate_layers``), DINO's by default: 4 blocks below a width of 768, else 1
    block and the pooled patch tokens; None for any other backbone (its pooled output)."""
    if not hasattr(backbone, "get_intermediate_layers"):
        if settings.n_last_blocks not in (None, 1) or settings.avgpool_patchtokens:
            raise ValueError(f"{type(backbone).__name__} is not a ViT: the features of "
                             "several blocks and pooled patch tokens need one")
        return None
    wide = int(getattr(backbone, "embed_dim", 0)) >= 768
    blocks = settings.n_last_blocks or (1 if wide else 4)
    depth = len(getattr(backbone, "blocks", ())) or blocks
    if blocks > depth:
        raise ValueError(f"linear blocks: the backbone has {depth} blocks, {blocks} asked for")
    pool = wide if settings.avgpool_patchtokens is None else settings.avgpool_patchtokens
    return blocks, pool


def frozen_features(backbone: nn.Module, x: torch.Tensor,
                    layout: tuple[int, bool] | None) -> torch.Tensor:
    """(B, D) features of a batch by the protocol's ``layout`` (:func:`vit_layout`)."""
    if layout is None:
        return backbone(x)
    blocks, pool = layout
    outputs = backbone.get_intermediate_layers(x, blocks, return_prefix_tokens=True, norm=True)
    parts = [prefix[:, 0] for _, prefix in outputs]
    if pool:
        parts.append(outputs[-1][0].mean(dim=1))
    return torch.cat(parts, dim=-1)


def _features(backbone: nn.Module, source: FeatureSource, transform: Transform,
              layout: tuple[int, bool] | None, batch_size: int,
              device: torch.device) -> torch.Tensor:
    out = []
    for indices in iter_chunks(len(source), batch_size):
        batch = torch.stack([transform(im) for im in source.load_many(indices)]).to(device)
        out.append(frozen_features(backbone, batch, layout).float())
    return torch.cat(out)


def dino_linear(
    backbone: nn.Module,
    train_source: FeatureSource,
    test_source: FeatureSource,
    augment: Augment,
    transform: Transform,
    *,
    settings: DinoLinearSettings = DinoLinearSettings(),
    device: torch.device | str = "cpu",
    seed: int = 0,
    prefix: str = "[eval]",
) -> dict[str, Any]:
    """Train one linear layer per base lr on the frozen ``backbone`` and test it.

    Args:
        backbone: the frozen feature extractor (left in eval mode for the protocol).
        train_source, test_source: labelled splits (the ``ImageSource`` contract).
        augment: ``augment(images, generator)``: training views of decoded images as one
            normalised float batch (B, C, S, S).
        transform: the evaluation view of one image (C, S, S).
        settings: epochs, base lrs, batch size, the features' layout.
        seed: the order of the images and the draws of the views.
        prefix: of the progress lines (one per epoch).

    Returns:
        ``linear_top1`` / ``linear_top5`` (the best base lr's), ``linear_lr`` (that lr),
        ``linear_by_lr`` (base lr -> top-1), ``linear_protocol`` ``"dino"``,
        ``linear_epochs``, ``linear_feature_dim``, ``linear_features`` (what they are).
    """
    device = torch.device(device)
    train_y = source_labels(train_source)
    test_y = source_labels(test_source)
    if train_y is None or test_y is None:
        raise ValueError("the linear protocol needs labelled train and test splits")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    layout = vit_layout(backbone, settings)
    was_training = backbone.training
    backbone.eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    torch_y = torch.as_tensor(np.asarray(train_y, dtype=np.int64), device="cpu")
    batch = settings.batch_size
    heads: nn.ModuleList | None = None
    optimisers: list[torch.optim.SGD] = []
    schedules: list[torch.optim.lr_scheduler.CosineAnnealingLR] = []
    steps = -(-len(train_source) // batch)
    start = time.perf_counter()
    try:
        for epoch in range(settings.epochs):
            order = torch.randperm(len(train_source), generator=generator, device="cpu").numpy()
            losses = torch.zeros(len(settings.lrs), device="cpu")
            for step in range(steps):
                ids = np.sort(order[step * batch: (step + 1) * batch])
                views = augment(train_source.load_many(ids), generator).to(device)
                with torch.no_grad():
                    feats = frozen_features(backbone, views, layout).float()
                if heads is None:
                    heads, optimisers, schedules = _heads(feats.shape[1], num_classes,
                                                          settings, batch, device, generator)
                target = torch_y[ids].to(device)
                for k, (head, opt) in enumerate(zip(heads, optimisers, strict=True)):
                    loss = F.cross_entropy(head(feats), target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses[k] += float(loss.detach()) / steps
            for schedule in schedules:
                schedule.step()
            elapsed = time.perf_counter() - start
            left = elapsed / (epoch + 1) * (settings.epochs - epoch - 1)
            shown = ", ".join(f"{lr:g} {loss:.3f}" for lr, loss in zip(
                settings.lrs, losses.tolist(), strict=True))
            print(f"{prefix} linear (DINO protocol) epoch {epoch + 1}/{settings.epochs}: "
                  f"loss by base lr {shown}; eta {clock(left)}", flush=True)
        assert heads is not None  # one epoch of at least one image
        progress = Progress("linear (DINO protocol) test features", prefix=prefix)
        with torch.no_grad():
            test_feats = _features(backbone, test_source, transform, layout, batch, device)
            progress(len(test_source), len(test_source))
            target = torch.as_tensor(np.asarray(test_y, dtype=np.int64), device=device)
            top1, top5 = [], []
            for head in heads:
                ranked = head(test_feats).topk(min(5, num_classes), dim=1).indices
                top1.append(float((ranked[:, 0] == target).float().mean()))
                top5.append(float((ranked == target[:, None]).any(dim=1).float().mean()))
    finally:
        backbone.train(was_training)
    best = int(np.argmax(top1))
    what = ("pooled output" if layout is None else
            f"[CLS] of the last {layout[0]} block(s)" + (" + mean patch token" if layout[1]
                                                        else ""))
    return {
        "linear_protocol": "dino",
        "linear_top1": top1[best],
        "linear_top5": top5[best] if num_classes >= 5 else None,
        "linear_lr": settings.lrs[best],
        "linear_by_lr": {f"{lr:g}": acc for lr, acc in zip(settings.lrs, top1, strict=True)},
        "linear_epochs": settings.epochs,
        "linear_feature_dim": int(test_feats.shape[1]),
        "linear_features": what,
    }


def _heads(dim: int, num_classes: int, settings: DinoLinearSettings, batch: int,
           device: torch.device, generator: torch.Generator
           ) -> tuple[nn.ModuleList, list[Any], list[Any]]:
    heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in settings.lrs)
    optimisers, schedules = [], []
    for head, lr in zip(heads, settings.lrs, strict=True):
        with torch.no_grad():  # N(0, 0.01) from the protocol's seed, as DINO initialises
            weight = torch.randn(head.weight.shape, generator=generator, device="cpu")
            head.weight.copy_(weight * 0.01)
            head.bias.zero_()
        head.to(device)
        opt = torch.optim.SGD(head.parameters(), lr=lr * batch / 256.0,
                              momentum=settings.momentum, weight_decay=settings.weight_decay)
        optimisers.append(opt)
        schedules.append(torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, settings.epochs, eta_min=0.0))
    return heads, optimisers, schedules


def parse_lrs(text: str) -> tuple[float, ...]:
    """``--linear-lrs 1e-3,3e-3``; a one-line ValueError for anything else.

    Examples:
        >>> parse_lrs("1e-3, 0.01")
        (0.001, 0.01)
    """
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--linear-lrs: expected numbers separated by commas, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"--linear-lrs: expected positive numbers, got {text!r}")
    return values

