"""DINO's two global views, t and t' of the paper (Section 3.3, Fig. 2), for any data set.

AdaSim trains on pairs (t(x_i), t'(x_j*)): view 1 (``which=0``) of the anchor image and
view 2 (``which=1``) of its partner. The two views are DINO's global crops (Caron et al.,
2021, Appendix "Data augmentation"; BYOL's asymmetric pair):

==============================  ===============  ===============  ======================
operation                       view 1 (t)       view 2 (t')      grey (C = 1) images
==============================  ===============  ===============  ======================
RandomResizedCrop, bicubic      scale (0.25, 1)  scale (0.25, 1)  same
horizontal flip                 p = 0.5          p = 0.5          same; off for digits
colour jitter 0.4/0.4/0.2/0.1   p = 0.8          p = 0.8          brightness + contrast
grayscale                       p = 0.2          p = 0.2          dropped (a no-op)
Gaussian blur                   p = 1.0          p = 0.1          same, smaller sigma
solarise (threshold 128)        p = 0            p = 0.2          same
normalise (per-channel mean/std)
==============================  ===============  ===============  ======================

The crop scale (0.25, 1) is the paper's (Section 5, "Limitations"; DINO's code uses 0.4).
Adaptations, each a constructor argument:

* Grey images keep brightness and contrast jitter; saturation, hue and grayscale do
  nothing to a single channel, so they are left out rather than silently skipped.
* Blur: DINO draws sigma in (0.1, 2.0) px at 224 px. A 28 px digit has strokes about two
  pixels wide, so the largest sigma shrinks with the image, ``min(2, size / 28)`` (1 px at
  28, 2 px from 56 px up): strong enough to matter, never erasing a stroke.
* Flip: a mirrored digit is another symbol (or none), so ``for_source`` turns the flip off
  for a source that is not ``mirror_invariant`` (``mnist`` and ``digits``); natural images
  keep DINO's flip.

Randomness: every random draw comes from torch's global generator (the v2 transforms),
so ``torch.manual_seed(s)`` makes a sequence of calls reproducible. Passing a
``torch.Generator`` instead draws one seed from it and runs the transforms on a forked
global RNG, which leaves the global state untouched and makes the view a function of the
generator's state only (e.g. seed it with hash(epoch, index) for exact resumes).

Examples:
    >>> views = GlobalViews(size=28, channels=1, mean=(0.1307,), std=(0.3081,), flip=False)
    >>> image = np.zeros((28, 28, 1), dtype=np.uint8)
    >>> views.view(image, 0).shape
    torch.Size([1, 28, 28])
    >>> views.views([image, image], 1, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

__all__ = ["GlobalViews"]

# The reference scale of the image statistics DINO's blur range was chosen for.
_DIGIT_SIZE = 28
_DINO_BLUR_SIGMA = (0.1, 2.0)
_SOLARIZE_THRESHOLD = 128  # PIL's ImageOps.solarize default, on uint8 pixels


class _SourceLike(Protocol):
    """What ``GlobalViews.for_source`` reads from an ``adasim_ray.data.ImageSource``."""

    name: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None
    mirror_invariant: bool


def _odd_kernel(sigma_max: float, size: int) -> int:
    # Cover +-3 sigma, odd, and no wider than the image (reflect padding needs pad < side).
    kernel = 2 * math.ceil(3 * sigma_max) + 1
    largest = size if size % 2 == 1 else size - 1
    return max(1, min(kernel, largest))


class GlobalViews:
    """DINO's two global views of an image, and the evaluation transform.

    Args:
        size: side S of the square output.
        channels: C of the output, 1 (grey) or 3 (RGB). Grey inputs are repeated to RGB
            if ``channels=3``; RGB inputs are converted to grey if ``channels=1``.
        mean, std: per-channel normalisation in [0, 1] units (length ``channels``).
        crop_scale: area range of RandomResizedCrop ((0.25, 1), the paper's).
        flip: random horizontal flip with p = 0.5.
        jitter_p: probability of colour jitter (0.8).
        jitter: (brightness, contrast, saturation, hue) strengths (0.4, 0.4, 0.2, 0.1);
            saturation and hue are used for RGB only.
        grayscale_p: probability of grey conversion, RGB only (0.2).
        blur_p: blur probability of (view 1, view 2): (1.0, 0.1).
        blur_sigma: sigma range in pixels; ``None`` means (0.1, min(2, size / 28)).
        solarize_p: solarisation probability of (view 1, view 2): (0.0, 0.2).
        eval_crop_fraction: the eval transform resizes the short side to
            ``round(size / eval_crop_fraction)`` and centre-crops ``size`` (0.875 = 224/256,
            as DINO's k-NN / linear evaluation).
    """

    def __init__(
        self,
        *,
        size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: tuple[float, float] = (0.25, 1.0),
        flip: bool = True,
        jitter_p: float = 0.8,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        blur_sigma: tuple[float, float] | None = None,
        solarize_p: tuple[float, float] = (0.0, 0.2),
        eval_crop_fraction: float = 0.875,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} value(s) each, got {len(mean)} "
                             f"and {len(std)}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0 < eval_crop_fraction <= 1:
            raise ValueError(f"eval_crop_fraction must lie in (0, 1], got {eval_crop_fraction}")
        if blur_sigma is None:
            high = min(_DINO_BLUR_SIGMA[1], size / _DIGIT_SIZE)
            blur_sigma = (min(_DINO_BLUR_SIGMA[0], high), high)
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {blur_sigma}")
        self.size = size
        self.channels = channels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_scale = crop_scale
        self.flip = flip
        self.blur_sigma = blur_sigma

        brightness, contrast, saturation, hue = jitter
        photometric: list[nn.Module] = []
        if channels == 3:
            photometric.append(v2.RandomApply(
                [v2.ColorJitter(brightness, contrast, saturation, hue)], p=jitter_p))
            photometric.append(v2.RandomGrayscale(p=grayscale_p))
        else:
            photometric.append(v2.RandomApply(
                [v2.ColorJitter(brightness=brightness, contrast=contrast)], p=jitter_p))

        blur = v2.GaussianBlur(_odd_kernel(blur_sigma[1], size), sigma=blur_sigma)
        self._views: tuple[v2.Compose, v2.Compose] = tuple(  # type: ignore[assignment]
            v2.Compose([
                v2.RandomResizedCrop(size, scale=crop_scale,
                                     interpolation=InterpolationMode.BICUBIC, antialias=True),
                *([v2.RandomHorizontalFlip(p=0.5)] if flip else []),
                *photometric,
                *([v2.RandomApply([blur], p=blur_p[which])] if blur_p[which] > 0 else []),
                *([v2.RandomSolarize(_SOLARIZE_THRESHOLD, p=solarize_p[which])]
                  if solarize_p[which] > 0 else []),
            ])
            for which in (0, 1)
        )
        resize = max(size, round(size / eval_crop_fraction))
        self._eval = v2.Compose([
            v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
        ])
        self._normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                      v2.Normalize(self.mean, self.std)])

    @classmethod
    def for_source(cls, source: _SourceLike, size: int | None = None,
                   **overrides: object) -> GlobalViews:
        """Views suited to an ``ImageSource``: its channels and statistics, its native size
        (224 when images vary), no flip unless a flip keeps an image's meaning
        (``source.mirror_invariant``: not for digits), and no eval resize margin when the
        images already have the requested size.

        Args:
            source: an ``adasim_ray.data.ImageSource`` (or anything with its attributes).
            size: output side; default the source's native size, else 224.
            **overrides: any constructor argument, e.g. ``crop_scale=(0.4, 1.0)``.
        """
        size = size if size is not None else (source.native_size or 224)
        kwargs: dict[str, object] = {
            "size": size, "channels": source.channels, "mean": source.mean, "std": source.std,
            "flip": source.mirror_invariant,
            "eval_crop_fraction": 1.0 if source.native_size == size else 0.875,
        }
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    # -- conversions ------------------------------------------------------------------------
    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, C) numpy -> uint8 (C, H, W) tensor with ``self.channels`` channels."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"expected a numpy uint8 image, got "
                            f"{type(image).__name__} {getattr(image, 'dtype', '')}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"expected an image of shape (H, W, C) with C in (1, 3), "
                             f"got {image.shape}")
        if not image.flags.writeable:  # e.g. a memmap: torch would warn, and must not write
            image = image.copy()
        x = torch.from_numpy(image).permute(2, 0, 1)
        if x.shape[0] != self.channels:
            x = x.expand(3, -1, -1) if self.channels == 3 else v2.functional.rgb_to_grayscale(x)
        return x

    # -- public API -------------------------------------------------------------------------
    def view(self, image: np.ndarray, which: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """View ``which`` (0: t, blur p = 1; 1: t', blur p = 0.1, solarise p = 0.2).

        Args:
            image: numpy uint8 (H, W, C).
            which: 0 for the anchor's view t, 1 for the partner's view t'.
            generator: optional source of randomness (see the module docstring); None
                uses torch's global RNG.

        Returns:
            float32 tensor (C, S, S), normalised.
        """
        return self.views([image], which, generator)[0]

    def views(self, images: Sequence[np.ndarray], which: int,
              generator: torch.Generator | None = None, *,
              normalize: bool = True) -> torch.Tensor:
        """View ``which`` of each image (independent random draws), stacked (B, C, S, S):
        float32 normalised, or with ``normalize=False`` the uint8 crops, a quarter of the
        bytes to ship, for :meth:`normalize` on the training device."""
        if which not in (0, 1):
            raise ValueError(f"which must be 0 (view t) or 1 (view t'), got {which}")
        pipeline = self._views[which]
        stack = self._stack if normalize else self._stack_uint8
        if generator is None:
            return stack([pipeline(self._to_tensor(im)) for im in images])
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return stack([pipeline(self._to_tensor(im)) for im in images])

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops (B, C, S, S) from ``views(..., normalize=False)`` as the float32
        views, on the crops' device (the same values as ``views`` gives)."""
        return self._normalize(crops)

    def eval_transform(self, image: np.ndarray) -> torch.Tensor:
        """Deterministic evaluation view: resize the short side, centre-crop S, normalise."""
        return self._stack([self._eval(self._to_tensor(image))])[0]

    def _stack_uint8(self, crops: list[torch.Tensor]) -> torch.Tensor:
        if not crops:
            return torch.empty(0, self.channels, self.size, self.size, dtype=torch.uint8)
        return torch.stack(crops)

    def _stack(self, crops: list[torch.Tensor]) -> torch.Tensor:
        # Normalise once for the batch: cheaper than per image.
        return self._normalize(self._stack_uint8(crops))

    def __repr__(self) -> str:
        return (f"GlobalViews(size={self.size}, channels={self.channels}, "
                f"crop_scale={self.crop_scale}, flip={self.flip}, "
                f"blur_sigma={self.blur_sigma})")
