"""The online evaluation of a run, spread over its Train workers.

Every rank embeds its share of the k-NN memory and of the test images with the teacher
backbone (under the run's autocast); rank 0 gathers the features and runs DINO's k-NN (and
at the end of the run the linear probe and few-shot, ``adasim_ray.evaluation.protocol``). At
ImageNet scale the memory is 1.28M images, evaluated ten and more times a run: on rank 0
alone, every other GPU would wait for it.

With one rank, the features are those of ``evaluate_backbone`` exactly (the same chunks of
images), so a one-worker run evaluates as before. With more, they are gathered on rank 0's
host a block of rows at a time, in the cache dtype on GPUs (``wire_dtype``), and the k-NN
keeps its bank in that dtype on the device.
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
from adasim_ray.engine.cache import CACHE_DTYPES
from adasim_ray.engine.shard import shard_ranges
from adasim_ray.evaluation.features import extract_features, source_labels
from adasim_ray.evaluation.progress import Progress
from adasim_ray.evaluation.protocol import evaluate

#: What rank 0 receives per collective of ``gather_rows``: the block of rows of every rank.
GATHER_BLOCK_BYTES = 64 << 20


def wire_dtype(cache_dtype: str, device: torch.device) -> torch.dtype:
    """The dtype the ranks' features travel and the k-NN bank is held in: the cache dtype on a
    GPU, float32 on a CPU.

    On a GPU the bank lives in its scarce memory (ResNet-50 on ImageNet: 10.5 GB in float32,
    5.2 GB in float16) and the k-NN multiplies half rows as the cache does (float32 results,
    ``evaluation.knn.bank_similarities``). A CPU has no fast half product and host memory to
    spare; rounding there would only move the figure of a run on CPU workers away from that
    of one process evaluating its checkpoint (``tests/train/test_pretrain.py`` asserts them
    equal). One rank gathers nothing: its features stay float32 whatever this says, exactly
    those of ``evaluate_backbone``."""
    return CACHE_DTYPES[cache_dtype] if device.type == "cuda" else torch.float32


def gather_rows(part: np.ndarray | torch.Tensor, sizes: list[int], rank: int, world: int,
                device: torch.device, dtype: torch.dtype = torch.float32,
                block_bytes: int = GATHER_BLOCK_BYTES) -> torch.Tensor | None:
    """The rows of every rank's ``part`` in rank order, rounded to ``dtype``, in rank 0's host
    memory (None on the other ranks). One rank returns its ``part`` as it is (no copy).

    The rows go a block at a time: each rank sends its next ``rows`` rows (the last block
    padded) with ``dist.gather`` from its ``device`` (NCCL needs CUDA tensors; gloo takes CPU
    ones), ``rows`` chosen so that the ``world`` blocks rank 0 receives hold at most
    ``block_bytes``; rank 0 copies each into the host array. Rank 0's device never holds more
    than one block per rank, where gathering whole parts at once held the whole bank
    (10.5 GB in float32 for ResNet-50 on ImageNet)."""
    rows_in = torch.from_numpy(part) if isinstance(part, np.ndarray) else part
    if world == 1 or not dist.is_initialized():
        return rows_in
    if len(sizes) != world or len(part) != sizes[rank]:
        raise ValueError(f"rank {rank} holds {len(part)} rows, sizes say {sizes}")
    width = rows_in.shape[1]
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = max(1, min(max(sizes), block_bytes // (world * width * itemsize)))
    send = torch.zeros((rows, width), dtype=dtype, device=device)
    received = [torch.empty_like(send) for _ in range(world)] if rank == 0 else None
    out = torch.empty((sum(sizes), width), dtype=dtype) if rank == 0 else None
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    for lo in range(0, max(sizes), rows):
        mine = rows_in[lo : lo + rows]
        # Rounded on the host: half the bytes to move, and the same rounding on every device.
        send[: len(mine)] = mine.to(dtype).to(device)
        dist.gather(send, received, dst=0)
        if out is None or received is None:
            continue
        for block, size, start in zip(received, sizes, starts, strict=True):
            n = min(rows, size - lo)
            if n > 0:
                out[start + lo : start + lo + n] = block[:n].cpu()
    return out


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
    dtype = wire_dtype(cfg.adasim.cache_dtype, device)
    for source, what in zip(sources, ("memory", "test"), strict=True):
        ranges = shard_ranges(len(source), world)  # the cache shards' split of ids
        lo, hi = ranges[rank]
        progress = (Progress(f"k-NN features ({what}, rank 0's share)", prefix="[adasim]")
                    if rank == 0 else None)
        part, _ = extract_features(backbone, source, views.eval_transform, device=device,
                                   rows=(lo, hi), amp_dtype=amp_dtype, progress=progress)
        features.append(gather_rows(part, [b - a for a, b in ranges], rank, world, device,
                                    dtype))
    if rank != 0:
        return None
    (memory, test), (memory_source, test_source) = features, sources
    return evaluate(
        memory, source_labels(memory_source), test, source_labels(test_source),
        device=device, linear=final and cfg.eval.linear, fewshot=final and cfg.eval.fewshot,
        seed=cfg.seed, k=cfg.eval.knn_k, T=cfg.eval.knn_temperature, progress_prefix="[adasim]",
    )
