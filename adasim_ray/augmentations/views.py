"""``GlobalViews``: DINO's two global views of an image, and the evaluation transform (the
module docstring of :mod:`adasim_ray.augmentations` has the table and the adaptations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2

from adasim_ray.augmentations.geometry import (
    CROP_DRAWS,
    as_tensor,
    crop_box,
    decode_rgb,
    draft_scale,
    image_size,
    read_encoded,
    rescale_box,
    resized_crop,
)
from adasim_ray.augmentations.photometric import blur, colour_grey, colour_rgb, solarize

# The reference scale of the image statistics DINO's blur range was chosen for.
_DIGIT_SIZE = 28
_DINO_BLUR_SIGMA = (0.1, 2.0)
_SOLARIZE_THRESHOLD = 128  # PIL's ImageOps.solarize default, on uint8 pixels

# The uniform numbers one view consumes, in this order: its crop, then one each for the
# flip, jitter on/off, the jitter's four factors and four keys for its order, grayscale,
# blur on/off, blur sigma, solarise. Every view takes all of them whatever is applied, so
# a view is a function of its row of draws alone.
_FLIP, _JITTER, _FACTORS, _ORDER, _GREY, _BLUR, _SIGMA, _SOLAR = (
    CROP_DRAWS, CROP_DRAWS + 1, CROP_DRAWS + 2, CROP_DRAWS + 6, CROP_DRAWS + 10,
    CROP_DRAWS + 11, CROP_DRAWS + 12, CROP_DRAWS + 13)
VIEW_DRAWS = CROP_DRAWS + 14


class _SourceLike(Protocol):
    """What ``GlobalViews`` reads from an ``adasim_ray.data.ImageSource``."""

    name: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None
    mirror_invariant: bool
    encoded_images: bool

    def load_many(self, indices: np.ndarray) -> list[np.ndarray]: ...

    def encoded(self, index: int) -> bytes | str | None: ...

    def encoded_many(self, indices: np.ndarray) -> list[bytes | str | None]: ...

    def where(self, index: int) -> str: ...


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
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.flip = flip
        self.jitter_p = jitter_p
        strengths = np.asarray(jitter, dtype=np.float64)
        if channels == 1:
            strengths[2:] = 0.0  # saturation and hue do nothing to one channel
        # (low, high) of each factor: brightness, contrast, saturation around 1, hue around 0
        self._factor_low = np.array([1.0, 1.0, 1.0, 0.0]) - strengths
        self._factor_low[:3] = np.maximum(self._factor_low[:3], 0.0)
        self._factor_high = np.array([1.0, 1.0, 1.0, 0.0]) + strengths
        self._jitter_ops = np.flatnonzero(strengths > 0)
        self.grayscale_p = grayscale_p if channels == 3 else 0.0
        self.blur_p = blur_p
        self.blur_sigma = blur_sigma
        self.solarize_p = solarize_p

        resize = max(size, round(size / eval_crop_fraction))
        self._eval = v2.Compose([
            v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
        ])
        # (x / 255 - mean) / std as one shift and one scale of the uint8 values
        self._shift = torch.tensor([255.0 * m for m in self.mean]).view(-1, 1, 1)
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(-1, 1, 1)

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

    # -- one view from its draws --------------------------------------------------------------
    def _channels_of(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"expected a numpy uint8 image, got "
                            f"{type(image).__name__} {getattr(image, 'dtype', '')}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"expected an image of shape (H, W, C) with C in (1, 3), "
                             f"got {image.shape}")
        if image.shape[2] == self.channels:
            return image
        if self.channels == 3:
            return np.repeat(image, 3, axis=2)
        return np.round(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                                           dtype=np.float32)
                        ).astype(np.uint8)[:, :, None]

    def _box(self, width: int, height: int, u: np.ndarray) -> tuple[int, int, int, int]:
        return crop_box(width, height, self.crop_scale, u[:CROP_DRAWS])

    def _render(self, image: torch.Tensor, box: tuple[int, int, int, int], which: int,
                u: np.ndarray) -> torch.Tensor:
        """View ``which`` of a decoded uint8 image (C, H, W) from its row of draws ``u``,
        as uint8 (S, S, C)."""
        crop = resized_crop(image, box, self.size, self.flip and u[_FLIP] < 0.5)
        jitter = None
        if u[_JITTER] < self.jitter_p and len(self._jitter_ops):
            factors = self._factor_low + (self._factor_high - self._factor_low) * u[
                _FACTORS:_FACTORS + 4]
            keys = u[_ORDER:_ORDER + 4]
            order = self._jitter_ops[np.argsort(keys[self._jitter_ops], kind="stable")]
            jitter = (order, factors)
        grey = u[_GREY] < self.grayscale_p
        if jitter is not None or grey:
            hwc = crop.numpy()
            hwc = colour_rgb(hwc, jitter, grey) if self.channels == 3 else colour_grey(
                hwc, jitter)
            crop = as_tensor(hwc)
        if u[_BLUR] < self.blur_p[which]:
            low, high = self.blur_sigma
            crop = blur(crop, low + (high - low) * float(u[_SIGMA]))
        if u[_SOLAR] < self.solarize_p[which]:
            crop = solarize(crop, _SOLARIZE_THRESHOLD)
        return crop

    def _planes(self, image: np.ndarray) -> torch.Tensor:
        """A decoded (H, W, C) numpy image as the (C, H, W) tensor view ``_render`` reads."""
        return as_tensor(self._channels_of(image)).permute(2, 0, 1)

    def draws(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """The uniform numbers of ``count`` views, (count, ``VIEW_DRAWS``), in one call."""
        return rng.random((count, VIEW_DRAWS))

    # -- public API -------------------------------------------------------------------------
    def view(self, image: np.ndarray, which: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """View ``which`` (0: t, blur p = 1; 1: t', blur p = 0.1, solarise p = 0.2).

        Args:
            image: numpy uint8 (H, W, C).
            which: 0 for the anchor's view t, 1 for the partner's view t'.
            generator: optional source of randomness (see the package docstring); None
                uses torch's global RNG.

        Returns:
            float32 tensor (C, S, S), normalised.
        """
        return self.views([image], which, generator)[0]

    def views(self, images: Sequence[np.ndarray], which: int,
              generator: torch.Generator | None = None, *,
              normalize: bool = True) -> torch.Tensor:
        """View ``which`` of each decoded image (independent random draws), stacked
        (B, C, S, S): float32 normalised, or with ``normalize=False`` the uint8 crops, a
        quarter of the bytes to ship, for :meth:`normalize` on the training device."""
        if which not in (0, 1):
            raise ValueError(f"which must be 0 (view t) or 1 (view t'), got {which}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu"))
        u = self.draws(np.random.default_rng(seed), len(images))
        crops = []
        for image, row in zip(images, u, strict=True):
            planes = self._planes(image)
            crops.append(self._render(planes, self._box(planes.shape[2], planes.shape[1], row),
                                      which, row))
        stacked = self._stack_uint8(crops)
        return self.normalize(stacked) if normalize else stacked

    def pair_views(self, source: _SourceLike, anchors: np.ndarray, partners: np.ndarray,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pairs (t(x_i), t'(x_j*)) of a batch straight from ``source``, as
        uint8 (B, C, S, S) each: the fetch's work.

        Each image is decoded once per batch slot (once for both views where j* = i), from
        its header first when the source keeps it encoded, so that a JPEG decodes at the
        smallest scale its crops allow. The draws come from ``rng`` in one call: the same
        generator state gives the same views.
        """
        u = self.draws(rng, 2 * len(anchors)).reshape(len(anchors), 2, VIEW_DRAWS)
        first: list[torch.Tensor] = []
        second: list[torch.Tensor] = []
        if not source.encoded_images:  # decoded arrays in memory (MNIST, digits)
            anchor_images = source.load_many(anchors)
            others = np.flatnonzero(partners != anchors)
            partner_images = list(anchor_images)
            for k, image in zip(others, source.load_many(partners[others]), strict=True):
                partner_images[k] = image
            for k, (a, p) in enumerate(zip(anchor_images, partner_images, strict=True)):
                a, p = self._planes(a), self._planes(p)
                first.append(self._render(a, self._box(a.shape[2], a.shape[1], u[k, 0]), 0,
                                          u[k, 0]))
                second.append(self._render(p, self._box(p.shape[2], p.shape[1], u[k, 1]), 1,
                                           u[k, 1]))
            return self._stack_uint8(first), self._stack_uint8(second)
        # The batch's encoded images in one call: a Parquet source reads each row group once.
        ids = np.unique(np.concatenate([anchors, partners]))
        encoded = dict(zip(ids.tolist(), source.encoded_many(ids), strict=True))
        for k, (i, j) in enumerate(zip(anchors.tolist(), partners.tolist(), strict=True)):
            wanted = [(i, 0)] if i != j else [(i, 0), (i, 1)]
            views = self._decoded_views(source, i, encoded[i], wanted, u[k])
            if i != j:
                views += self._decoded_views(source, j, encoded[j], [(j, 1)], u[k])
            first.append(views[0])
            second.append(views[1])
        return self._stack_uint8(first), self._stack_uint8(second)

    def _decoded_views(self, source: _SourceLike, index: int, encoded: bytes | str | None,
                       wanted: list[tuple[int, int]], u: np.ndarray) -> list[torch.Tensor]:
        what = source.where(index)
        data = read_encoded(encoded)
        full = image_size(data, what)
        boxes = [self._box(full[0], full[1], u[which]) for _, which in wanted]
        planes = decode_rgb(data, draft_scale(boxes, self.size), what)
        if self.channels == 1:
            planes = self._planes(planes.permute(1, 2, 0).numpy())
        got = (planes.shape[2], planes.shape[1])
        return [self._render(planes, rescale_box(box, full, got), which, u[which])
                for box, (_, which) in zip(boxes, wanted, strict=True)]

    def normalize(self, crops: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 crops (B, C, S, S) from ``views(..., normalize=False)`` as the float32
        views, on the crops' device (the same values as ``views`` gives).

        ``out``: a float32 tensor of the same shape and device to write into (the training
        loop passes one per view and step, so that a CPU worker does not map fresh memory
        for every batch: at 224 px that is a third of the cost)."""
        shift = self._shift.to(crops.device, non_blocking=True)
        scale = self._scale.to(crops.device, non_blocking=True)
        if out is None or out.shape != crops.shape or out.device != crops.device:
            out = torch.empty(crops.shape, dtype=torch.float32, device=crops.device)
        return out.copy_(crops).sub_(shift).mul_(scale)


    def eval_transform(self, image: np.ndarray) -> torch.Tensor:
        """Deterministic evaluation view: resize the short side, centre-crop S, normalise."""
        x = as_tensor(np.ascontiguousarray(self._channels_of(image))).permute(2, 0, 1)
        return self.normalize(self._eval(x).unsqueeze(0))[0]

    def _stack_uint8(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """(S, S, C) crops as one contiguous uint8 batch (B, C, S, S)."""
        out = torch.empty(len(crops), self.channels, self.size, self.size, dtype=torch.uint8)
        for k, crop in enumerate(crops):
            out[k].copy_(crop.permute(2, 0, 1))
        return out

    def __repr__(self) -> str:
        return (f"GlobalViews(size={self.size}, channels={self.channels}, "
                f"crop_scale={self.crop_scale}, flip={self.flip}, "
                f"blur_sigma={self.blur_sigma})")
