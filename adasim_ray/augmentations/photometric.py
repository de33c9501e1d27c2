"""The photometric half of DINO's views on one uint8 crop: colour jitter, grayscale,
Gaussian blur, solarisation. Plain numpy, torch and PIL, one image at a time in the fetch.

Speed is the point (the GPUs wait on the CPUs that make the views), and each operation
keeps the reference's distribution:

* **Colour jitter + grayscale as one lookup table.** Brightness, contrast, saturation and
  hue (in a random order, each clamped to [0, 1] as torchvision does) and the optional
  grayscale are one function of a pixel's colour, except that contrast blends towards the
  mean grey of the image *as it is at that point of the chain*. That function is
  evaluated exactly, in float, on a ``LUT_SIZE``-point grid per channel and applied with
  PIL's trilinear :class:`~PIL.ImageFilter.Color3DLUT` (one C pass over the pixels instead
  of five). Contrast's mean is taken from every ``MEAN_STRIDE``-th pixel in each direction,
  carried through the same chain. Approximations, bounded in
  ``tests/test_photometric.py``: trilinear interpolation between grid points (the hue
  shift and the clamps are piecewise linear in RGB, so only cells with a kink differ),
  and the subsampled mean. Grey images have brightness and contrast only, applied as an
  exact 256-entry table.
* **Blur** is a separable Gaussian of the drawn sigma, truncated at 3 sigma (DINO's PIL
  blur has no stated support; torchvision's uses the kernel of the largest sigma for
  every sigma: the difference is the mass beyond 3 sigma, under 0.3 %), with reflected
  borders, in float, rounded once.
* **Solarise** inverts the pixels >= 128, exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

# Grid points per channel of the jitter's lookup table. Against the exact chain on every
# pixel (photo-like 224 px crops, the paper's jitter strengths): 17 points differ by 0.5
# grey levels on average and 6 at the 99.9th percentile; 33 by 0.2 and 3 but cost 5x the
# grid arithmetic; 9 by 1.6 and 13. tests/test_photometric.py holds the bound.
LUT_SIZE = 17
# Contrast blends towards the mean grey of the image: computed on every 8th pixel in each
# direction (1/64 of them) of a large crop, every pixel of a small one (at least 256 of
# them), carried through the jitter chain with the grid.
MEAN_STRIDE = 8
_MEAN_PIXELS = 256
# ITU-R 601 luma, as PIL's "L" conversion and torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return _LUMA[0] * rgb[0] + _LUMA[1] * rgb[1] + _LUMA[2] * rgb[2]


def _shift_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of colours ``rgb`` (3, P) in [0, 1] by ``shift`` turns in HSV;
    value and saturation are kept."""
    r, g, b = rgb
    high = np.maximum(np.maximum(r, g), b)
    chroma = high - np.minimum(np.minimum(r, g), b)
    safe = np.where(chroma > 0, chroma, np.float32(1.0))
    # hue in sixths of a turn, from the channel that holds the maximum (0 for greys)
    hue = np.where(high == r, (g - b) / safe,
                   np.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue += np.float32(6.0 * shift + 6.0)
    # back to RGB: each channel is a clipped triangle of the hue around its own centre
    out = np.empty_like(rgb)
    for channel, centre in enumerate((3.0, 5.0, 7.0)):  # 0, 2, 4 plus the 3 of the fold
        distance = np.abs(np.mod(hue - np.float32(centre), 6.0) - np.float32(3.0))
        np.clip(distance - np.float32(1.0), 0.0, 1.0, out=distance)
        out[channel] = high - chroma * distance
    return out


def jitter_chain(rgb: np.ndarray, order: np.ndarray, factors: np.ndarray, mean_points: int,
                 grayscale: bool) -> np.ndarray:
    """Apply the jitter in ``order`` to float colours ``rgb`` (3, P) in [0, 1]; the last
    ``mean_points`` columns are the image's sample for contrast's mean. ``factors`` holds
    (brightness, contrast, saturation, hue shift)."""
    out = rgb
    brightness, contrast, saturation, hue = (float(f) for f in factors)
    for op in order:
        if op == BRIGHTNESS:
            out = np.clip(out * np.float32(brightness), 0.0, 1.0)
        elif op == CONTRAST:
            mean = float(_grey(out[:, out.shape[1] - mean_points:]).mean())
            out = np.clip(out * np.float32(contrast) + np.float32((1.0 - contrast) * mean),
                          0.0, 1.0)
        elif op == SATURATION:
            grey = _grey(out) * np.float32(1.0 - saturation)
            out = np.clip(out * np.float32(saturation) + grey, 0.0, 1.0)
        else:
            out = _shift_hue(out, hue)
    if grayscale:
        out = np.broadcast_to(_grey(out), out.shape)
    return out


def _grid(size: int) -> np.ndarray:
    # Color3DLUT's table order: red changes fastest, then green, then blue.
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()])


_GRIDS: dict[int, np.ndarray] = {}


def colour_rgb(image: np.ndarray, jitter: tuple[np.ndarray, np.ndarray] | None,
               grayscale: bool, lut_size: int = LUT_SIZE) -> np.ndarray:
    """Colour jitter (``(order, factors)`` or None) then grayscale of an RGB uint8 image
    (H, W, 3), through one lookup table; a new array."""
    if jitter is None and not grayscale:
        return image
    pil = Image.fromarray(image)
    if jitter is None:  # grayscale alone: PIL's exact conversion
        return np.asarray(pil.convert("L").convert("RGB"))
    grid = _GRIDS.get(lut_size)
    if grid is None:
        grid = _GRIDS[lut_size] = _grid(lut_size)
    stride = max(1, min(MEAN_STRIDE, math.isqrt(image.shape[0] * image.shape[1] // _MEAN_PIXELS)))
    sample = image[::stride, ::stride].reshape(-1, 3).T.astype(np.float32) / 255.0
    order, factors = jitter
    table = jitter_chain(np.concatenate([grid, sample], axis=1), order, factors,
                         sample.shape[1], grayscale)[:, : grid.shape[1]]
    lut = ImageFilter.Color3DLUT(lut_size, np.ascontiguousarray(table.T), channels=3,
                                 _copy_table=False)
    return np.asarray(pil.filter(lut))


def colour_grey(image: np.ndarray, jitter: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Brightness and contrast (in ``order``; saturation and hue are no-ops on one channel)
    of a grey uint8 image (H, W, 1), exactly, as a 256-entry table."""
    if jitter is None:
        return image
    order, factors = jitter
    counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64) / 255.0
    for op in order:
        if op == BRIGHTNESS:
            levels = np.clip(levels * factors[BRIGHTNESS], 0.0, 1.0)
        elif op == CONTRAST:
            mean = float(counts @ levels / counts.sum())
            levels = np.clip(factors[CONTRAST] * levels + (1.0 - factors[CONTRAST]) * mean,
                             0.0, 1.0)
    table = np.round(levels * 255.0).astype(np.uint8)
    return table[image]


def gaussian_taps(sigma: float, side: int) -> torch.Tensor:
    """The normalised 1-d Gaussian of ``sigma`` px, truncated at 3 sigma, odd, and shorter
    than the image (reflected borders need a pad below the side)."""
    radius = max(1, math.ceil(3.0 * sigma))
    radius = min(radius, (side - 1) // 2 if side > 2 else 0)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def blur(crop: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a uint8 crop (S, S, C), separable, reflected borders; uint8
    (S, S, C) back (a view of channel planes).

    Each pass sums shifted slices of the padded planes (one multiply-add per tap over the
    whole image): on one core ~2x faster than ``conv2d`` at these sizes."""
    height, width, _ = crop.shape
    taps = gaussian_taps(sigma, min(height, width)).tolist()
    radius = len(taps) // 2
    if radius == 0:
        return crop
    planes = crop.permute(2, 0, 1).to(torch.float32).unsqueeze(0)
    padded = F.pad(planes, (radius,) * 4, mode="reflect")[0]
    rows = padded[:, :, :width] * taps[0]
    for t in range(1, len(taps)):
        rows.add_(padded[:, :, t: t + width], alpha=taps[t])
    out = rows[:, :height] * taps[0]
    for t in range(1, len(taps)):
        out.add_(rows[:, t: t + height], alpha=taps[t])
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def solarize(crop: torch.Tensor, threshold: int = 128) -> torch.Tensor:
    """Invert the pixels >= ``threshold`` (PIL's ImageOps.solarize), any layout."""
    return torch.where(crop >= threshold, 255 - crop, crop)
