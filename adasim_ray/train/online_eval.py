"""The online evaluation of a run, spread over its Train workers.

Every rank embeds its share of the k-NN memory and of the test images with the teacher
backbone (under the run's autocast); rank 0 gathers the features and runs DINO's k-NN (and
at the end of the run the linear probe and few-shot, ``adasim_ray.evaluation.protocol``). At
ImageNet scale the memory is 1.28M images, evaluated ten and more times a run: on rank 0
alone, every other GPU would wait for it.

With one rank, the features are those of ``evaluate_backbone`` exactly (the same chunks of
images), so a one-worker run evaluates as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from adasim_ray.augmentations import GlobalViews
from adasim_ray.config import PretrainConfig
from adasim_ray.data import ImageSource
from adasim_ray.engine.shard import shard_ranges
from adasim_ray.evaluation.features import extract_features, source_labels
from adasim_ray.evaluation.progress import Progress
from adasim_ray.evaluation.protocol import evaluate


def gather_rows(part: np.ndarray, sizes: list[int], rank: int, world: int,
                device: torch.device) -> np.ndarray | None:
    """The rows of every rank's ``part`` in rank order, on rank 0 (None on the others).

    Parts are padded to the largest share and sent with ``dist.gather`` from the rank's
    device (NCCL needs CUDA tensors; gloo takes CPU ones)."""
    if world == 1 or not dist.is_initialized():
        return part
    width = part.shape[1]
    padded = torch.zeros((max(sizes), width), dtype=torch.float32, device=device)
    padded[: len(part)] = torch.from_numpy(part).to(device)
    parts = [torch.empty_like(padded) for _ in range(world)] if rank == 0 else None
    dist.gather(padded, parts, dst=0)
    if parts is None:
        return None
    return np.concatenate([p[:size].cpu().numpy() for p, size in zip(parts, sizes, strict=True)])


def online_evaluation(
    backbone: nn.Module,
    cfg: PretrainConfig,
    sources: tuple[ImageSource, ImageSource],
    views: GlobalViews,
    *,
    final: bool,
    rank: int,
    world: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any] | None:
    """k-NN of ``backbone`` (``final``: also the linear probe and few-shot, as the config
    asks) on the eval sources (k-NN memory, test queries); every rank must call it. Returns
    the result dict of ``evaluate`` on rank 0, None on the others."""
    features = []
    for source, what in zip(sources, ("memory", "test"), strict=True):
        ranges = shard_ranges(len(source), world)  # the cache shards' split of ids
        lo, hi = ranges[rank]
        progress = (Progress(f"k-NN features ({what}, rank 0's share)", prefix="[adasim]")
                    if rank == 0 else None)
        part, _ = extract_features(backbone, source, views.eval_transform, device=device,
                                   rows=(lo, hi), amp_dtype=amp_dtype, progress=progress)
        features.append(gather_rows(part, [b - a for a, b in ranges], rank, world, device))
    if rank != 0:
        return None
    (memory, test), (memory_source, test_source) = features, sources
    return evaluate(
        memory, source_labels(memory_source), test, source_labels(test_source),
        device=device, linear=final and cfg.eval.linear, fewshot=final and cfg.eval.fewshot,
        seed=cfg.seed, k=cfg.eval.knn_k, T=cfg.eval.knn_temperature, progress_prefix="[adasim]",
    )
