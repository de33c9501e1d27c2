"""Frozen-feature extraction for the evaluation protocols (DINO's ``extract_features``).

Every protocol of the paper (k-NN and linear in Sec. 4.5, few-shot in Sec. 4.6) runs on
features of a frozen backbone: DINO's ``eval_knn.py`` puts the teacher backbone in eval
mode, runs it without gradients over the whole split and L2-normalises the outputs. This
module does the same for any source that follows the ``ImageSource`` contract (``len``,
``load_many(indices) -> list of (H, W, C) uint8``, ``labels``), one chunk of indices at a
time so memory stays bounded by ``batch_size`` images.

Also here: the raw-pixel baseline (flattened uint8 pixels, L2-normalised), which is what a
user compares against to see what pretraining bought.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Transform = Callable[[np.ndarray], torch.Tensor]
"""Maps one (H, W, C) uint8 image to a float tensor (C, S, S), e.g. ``eval_transform``."""

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each chunk."""


class FeatureSource(Protocol):
    """The part of ``adasim_ray.data.ImageSource`` that evaluation needs."""

    labels: np.ndarray | None

    def __len__(self) -> int: ...

    def load_many(self, indices: np.ndarray) -> Sequence[np.ndarray]: ...


def iter_chunks(n: int, chunk_size: int) -> Iterator[np.ndarray]:
    """Yield contiguous index arrays covering ``range(n)``, none of them empty.

    Args:
        n: Number of items (>= 0; zero yields nothing).
        chunk_size: Maximum chunk length (>= 1). The last chunk holds the remainder.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    for start in range(0, n, chunk_size):
        yield np.arange(start, min(start + chunk_size, n), dtype=np.int64)


def source_labels(source: FeatureSource) -> np.ndarray | None:
    """The source's labels as int64 [N], or None for an unlabelled data set."""
    labels = getattr(source, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(source),):
        raise ValueError(
            f"source labels have shape {labels.shape}, expected ({len(source)},)"
        )
    return labels


def to_chw_float(image: np.ndarray) -> torch.Tensor:
    """Default transform: (H, W, C) uint8 -> (C, H, W) float32 in [0, 1], no normalisation."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def extract_features(
    backbone: nn.Module,
    source: FeatureSource,
    transform: Transform | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    *,
    progress: ProgressFn | None = None,
    rows: tuple[int, int] | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of a frozen backbone over a split (or its rows ``[lo, hi)``: one rank's
    share), L2-normalised (DINO's eval_knn).

    The backbone runs in eval mode (BatchNorm uses running statistics, no dropout) under
    ``torch.inference_mode``; its previous train/eval state is restored afterwards, so this
    can be called in the middle of training. Features are L2-normalised as in DINO's
    ``extract_features`` (``nn.functional.normalize(features, dim=1, p=2)``), which makes
    a dot product a cosine similarity for k-NN and few-shot.

    Args:
        backbone: Maps (B, C, S, S) to (B, d) (the teacher backbone for DINO).
        source: Random-access split following the ``ImageSource`` contract.
        transform: Image (H, W, C) uint8 -> tensor (C, S, S). ``None`` only scales to [0, 1].
        batch_size: Images per forward pass (>= 1); the last chunk holds the remainder.
        device: Where to run. ``None`` runs where the backbone's parameters live; another
            device moves the backbone there (in place, as ``nn.Module.to`` does).
        progress: Optional ``progress(done, total)`` called after each chunk.
        rows: only the images ``lo .. hi - 1`` (``None``: all of them).
        amp_dtype: run the backbone under autocast to this dtype (float16, bfloat16);
            the features are normalised in float32.

    Returns:
        ``(features, labels)``: float32 [N, d] with unit rows (an all-zero output stays
        zero), and int64 [N] labels or ``None`` if the source has none (N: the rows').

    Raises:
        ValueError: empty source, bad ``batch_size``, a backbone output that is not
            (B, d), or non-finite features (e.g. a diverged checkpoint).

    Examples:
        >>> feats, labels = extract_features(model.eval_backbone(), source,
        ...                                  views.eval_transform, batch_size=512)
    """
    if len(source) == 0:
        raise ValueError("cannot extract features from an empty source")
    lo, hi = rows if rows is not None else (0, len(source))
    n = hi - lo
    if not 0 <= lo < hi <= len(source):
        raise ValueError(f"rows [{lo}, {hi}) are not a non-empty range of the source's "
                         f"{len(source)} images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    transform = transform or to_chw_float
    if device is None:
        device = _module_device(backbone)
    else:
        device = torch.device(device)
        backbone.to(device)
    labels = source_labels(source)
    if labels is not None:
        labels = labels[lo:hi]
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())

    was_training = backbone.training
    backbone.eval()
    out: np.ndarray | None = None
    try:
        with torch.inference_mode(), autocast:
            for local in iter_chunks(n, batch_size):
                indices = local + lo
                images = source.load_many(indices)
                if len(images) != len(indices):
                    raise ValueError(
                        f"load_many returned {len(images)} images for {len(indices)} indices"
                    )
                batch = torch.stack([transform(image) for image in images]).to(device)
                feats = backbone(batch)
                if feats.ndim != 2 or feats.shape[0] != len(indices):
                    raise ValueError(
                        f"backbone must return (B, d) features, got shape {tuple(feats.shape)} "
                        f"for a batch of {len(indices)}"
                    )
                if not torch.isfinite(feats).all():
                    raise ValueError(
                        f"backbone produced non-finite features for images "
                        f"{int(indices[0])}..{int(indices[-1])}"
                    )
                feats = F.normalize(feats.float(), dim=1, p=2)
                if out is None:
                    out = np.empty((n, feats.shape[1]), dtype=np.float32)
                out[local[0] : local[-1] + 1] = feats.cpu().numpy()
                if progress is not None:
                    progress(int(local[-1]) + 1, n)
    finally:
        backbone.train(was_training)
    assert out is not None  # n >= 1 guarantees one chunk
    return out, labels


def raw_pixel_features(
    source: FeatureSource,
    batch_size: int = 1024,
    *,
    size: int | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw-pixel baseline: flattened pixels as float, L2-normalised (``--raw-pixels``).

    k-NN on these features is the classic "no learning" reference (about 0.97 on MNIST
    with all 60k training images); a pretrained backbone should be compared against it.

    Args:
        source: Random-access split following the ``ImageSource`` contract.
        batch_size: Images loaded at a time (>= 1).
        size: Resize every image to ``size`` x ``size`` (bilinear) first. Needed for data
            sets whose images differ in size (folders, Parquet); ``None`` keeps native size.
        progress: Optional ``progress(done, total)`` called after each chunk.

    Returns:
        ``(features, labels)``: float32 [N, H * W * C] unit rows and int64 labels or None.
    """
    n = len(source)
    if n == 0:
        raise ValueError("cannot extract features from an empty source")
    labels = source_labels(source)
    out: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    for indices in iter_chunks(n, batch_size):
        images = source.load_many(indices)
        batch = []
        for offset, image in enumerate(images):
            pixels = torch.from_numpy(np.ascontiguousarray(image)).float()
            if size is not None:
                pixels = F.interpolate(
                    pixels.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                    align_corners=False, antialias=True,
                )[0].permute(1, 2, 0)
            if shape is None:
                shape = tuple(pixels.shape)
            elif tuple(pixels.shape) != shape:
                raise ValueError(
                    f"raw-pixel features need images of one size: image "
                    f"{int(indices[offset])} is {tuple(pixels.shape)}, earlier ones {shape}; "
                    f"pass size= to resize"
                )
            batch.append(pixels.reshape(-1))
        feats = F.normalize(torch.stack(batch), dim=1, p=2)
        if out is None:
            out = np.empty((n, feats.shape[1]), dtype=np.float32)
        out[indices[0] : indices[-1] + 1] = feats.numpy()
        if progress is not None:
            progress(int(indices[-1]) + 1, n)
    assert out is not None
    return out, labels
