"""From a validated config to the parts of a run: sources, views, backbone, method.

Plain PyTorch: the Ray layer, the evaluation command and the benchmarks build their models here,
so that a checkpoint always meets the same architecture that wrote it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from adasim_ray.augmentations import GlobalViews
from adasim_ray.backbones import build_backbone
from adasim_ray.config import PretrainConfig
from adasim_ray.data import ImageSource, open_source, sample_images
from adasim_ray.errors import ConfigError, first_line
from adasim_ray.init_weights import InitWeights, load_weights, refuse_weight_kwargs
from adasim_ray.methods import build_registered


def open_train_source(cfg: PretrainConfig) -> ImageSource:
    """The training split of ``cfg.data``, a stratified sample of ``cfg.limit_images`` of
    its images when set (the same images in every run and rank: ``subset_seed``)."""
    source = open_source(cfg.data, "train", skip_corrupt=cfg.skip_corrupt,
                         cache_mb=cfg.parquet_cache_mb, labels=cfg.data_labels != "none")
    return sample_images(source, cfg.limit_images, cfg.subset_seed)


def evaluates(cfg: PretrainConfig, train: ImageSource) -> bool:
    """Whether the run has a k-NN to run: a labelled ``eval_data``, or labelled training
    data (whose test split is then the queries)."""
    return cfg.eval_data is not None or train.labels is not None


def open_eval_sources(cfg: PretrainConfig) -> tuple[ImageSource, ImageSource]:
    """(k-NN memory, test queries): the train and test splits of :func:`open_eval_source`."""
    return open_eval_source(cfg, "train"), open_eval_source(cfg, "test")


def open_eval_source(cfg: PretrainConfig, split: str) -> ImageSource:
    """Split ``split`` (``train``: the k-NN memory, ``test``: its queries) of ``eval_data``
    (default: ``data``), a stratified sample of ``eval.max_train`` / ``eval.max_test`` images
    when set."""
    limit = {"train": cfg.eval.max_train, "test": cfg.eval.max_test}[split]
    source = open_source(cfg.eval_data or cfg.data, split, skip_corrupt=cfg.skip_corrupt,
                         cache_mb=cfg.parquet_cache_mb)
    return sample_images(source, limit, cfg.subset_seed, setting=f"eval.max_{split}")


def view_size(cfg: PretrainConfig, source: ImageSource) -> int:
    """The views' side: ``augment.image_size``, else the images' shared size (224 when they
    vary) capped at ``augment.max_image_size``."""
    if cfg.augment.image_size is not None:
        return cfg.augment.image_size
    size = source.native_size or 224
    cap = cfg.augment.max_image_size
    return size if cap is None else min(size, cap)


def make_views(cfg: PretrainConfig, source: ImageSource) -> GlobalViews:
    a = cfg.augment
    overrides: dict[str, Any] = {"crop_scale": tuple(a.crop_scale), "jitter": tuple(a.jitter),
                                 "jitter_p": a.jitter_p, "grayscale_p": a.grayscale_p}
    if cfg.augment.flip is not None:
        overrides["flip"] = cfg.augment.flip
    return GlobalViews.for_source(source, view_size(cfg, source), **overrides)


def iters_per_epoch(num_images: int, batch_size: int, world: int) -> int:
    """Steps per epoch: each of the ``world`` ranks takes N // world anchors in batches of
    batch_size / world (the last batch may be smaller)."""
    per_rank = num_images // max(world, 1)
    return math.ceil(per_rank / (batch_size // max(world, 1)))


def build_backbone_for(cfg: PretrainConfig, views: GlobalViews) -> tuple[nn.Module, int]:
    """The run's backbone at its views' size and channels, with ``backbone_kwargs``; a
    keyword its constructor refuses, or one of timm's that loads weights (the ``init``
    section does), is a ConfigError naming it."""
    refuse_weight_kwargs(cfg.backbone_kwargs)
    if not cfg.backbone_kwargs:
        return build_backbone(cfg.backbone, image_size=views.size, in_chans=views.channels)
    try:
        return build_backbone(cfg.backbone, image_size=views.size, in_chans=views.channels,
                              **cfg.backbone_kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone_kwargs: {cfg.backbone} does not take "
                          f"{sorted(cfg.backbone_kwargs)} ({first_line(err)})") from None


def build_model(
    cfg: PretrainConfig, views: GlobalViews, num_images: int, world: int = 1, *,
    init: InitWeights | None = None,
) -> nn.Module:
    """The method (student, teacher, heads) of ``cfg`` with its per-iteration schedules.

    ``init`` (the weights ``cfg.init`` names, read by
    :func:`adasim_ray.init_sources.read_init`) is loaded into the backbone before the method
    is built around it, so that the student and the teacher both start from it (strictly
    unless ``init.strict`` is false); the run says how many tensors it loaded. Without it the
    backbone starts random: the commands that load a checkpoint afterwards pass none.
    """
    torch.manual_seed(cfg.seed)
    backbone, feat_dim = build_backbone_for(cfg, views)
    if init is not None:
        _say(load_weights(backbone, init, cfg.init.strict).lines())
    return build_registered(
        cfg.method,
        backbone,
        feat_dim,
        cfg.method_config,
        epochs=cfg.epochs,
        iters_per_epoch=iters_per_epoch(num_images, cfg.batch_size, world),
        batch_size=cfg.batch_size,
    )


def _say(lines: list[str]) -> None:
    """Print once per run: on rank 0 of a process group, or without one."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized() \
            or torch.distributed.get_rank() == 0:
        for line in lines:
            print(line, flush=True)


def labels_of(source: ImageSource) -> np.ndarray | None:
    return None if source.labels is None else np.asarray(source.labels, dtype=np.int64)
