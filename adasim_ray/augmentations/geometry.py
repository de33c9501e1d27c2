"""The geometric half of DINO's views: where the random resized crop falls, how small the
JPEG may be decoded for it, and the crop's resize. Plain numpy, PIL and torch.

The crop's position is drawn from the image's size alone (its header), before any pixel is
decoded, so that a JPEG can be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
PIL's ``draft``) whenever the crop still has at least the output's side at that scale: the
resize then starts from fewer pixels (a large photo decodes up to 8x faster) and still
downsamples. At ImageNet's typical 500 x 375 and 224 px views the crops are too small for
it, and the image is decoded whole.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from adasim_ray.data.decode import undecodable

# RandomResizedCrop draws (area, aspect) up to 10 times, as torchvision and DINO do.
CROP_ATTEMPTS = 10
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# uniform numbers one crop consumes: per attempt area, log aspect, top, left
CROP_DRAWS = 4 * CROP_ATTEMPTS
_DRAFT_SCALES = (8, 4, 2)


def crop_box(width: int, height: int, scale: tuple[float, float],
             u: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random resized crop of a ``width`` x
    ``height`` image, from ``CROP_DRAWS`` uniform numbers ``u``: an area fraction uniform in
    ``scale`` and an aspect ratio log-uniform in (3/4, 4/3), the first of 10 draws that
    fits, else the largest centred crop of the nearest allowed aspect."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for attempt in range(CROP_ATTEMPTS):
        ua, ur, ut, ul = u[4 * attempt: 4 * attempt + 4]
        target = area * (scale[0] + (scale[1] - scale[0]) * ua)
        ratio = math.exp(log_low + (log_high - log_low) * ur)
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(ut * (height - h + 1)), height - h)
            left = min(int(ul * (width - w + 1)), width - w)
            return left, top, w, h
    aspect = width / height
    if aspect < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def draft_scale(boxes: list[tuple[int, int, int, int]], size: int) -> int:
    """The largest JPEG reduction (8, 4, 2 or 1) at which every crop in ``boxes`` still has
    at least ``size`` pixels on each side."""
    smallest = min(min(w, h) for _, _, w, h in boxes)
    return next((s for s in _DRAFT_SCALES if smallest // s >= size), 1)


def read_encoded(data: bytes | str | Path) -> bytes:
    """The encoded bytes of an image given as bytes or a file path."""
    if isinstance(data, bytes):
        return data
    with open(data, "rb") as file:
        return file.read()


def image_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) from the image's header; no pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as exc:  # PIL raises many types for "not an image I can read"
        raise undecodable(what, exc) from exc


def decode_rgb(data: bytes, scale: int, what: str) -> torch.Tensor:
    """Decode to RGB uint8 (3, H, W) (any memory layout), at 1/``scale`` of the image's
    size where the codec can (JPEG's DCT scaling through PIL's ``draft``); the caller
    rescales its boxes by the size it gets.

    At full scale torchvision's decoder (libjpeg-turbo, libpng, ...) writes the tensor
    directly, ~1.6x faster than PIL's decode and copy out; a file it refuses (CMYK or
    palette oddities, a truncated JPEG it would only warn about) goes through PIL, whose
    error names a file that is really unreadable."""
    if scale == 1:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore")  # torch.frombuffer of read-only bytes
                encoded = torch.frombuffer(data, dtype=torch.uint8)
            return decode_image(encoded, mode=ImageReadMode.RGB)
        except Exception:  # noqa: BLE001, S110 - PIL below decodes it or names the problem
            pass
    try:
        with Image.open(io.BytesIO(data)) as image:
            if scale > 1:
                width, height = image.size
                image.draft("RGB", (-(-width // scale), -(-height // scale)))
            pixels = np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise undecodable(what, exc) from exc
    return as_tensor(pixels).permute(2, 0, 1)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of an array that may be read-only (PIL's pixels are): the views
    only read it, so the copy torch's warning suggests would be wasted work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def resized_crop(image: torch.Tensor, box: tuple[int, int, int, int], size: int,
                 flip: bool) -> torch.Tensor:
    """The ``box`` of a uint8 image (C, H, W) resized to ``size`` x ``size`` (bicubic,
    antialiased) and mirrored if ``flip``: a contiguous uint8 (S, S, C).

    The region is copied channels-last first: torch's vectorised uint8 resampling works on
    that layout, and its output is then already the (S, S, C) that PIL and the photometric
    ops read."""
    left, top, w, h = box
    region = image[:, top: top + h, left: left + w].unsqueeze(0)
    region = region.contiguous(memory_format=torch.channels_last)
    if (h, w) != (size, size):
        region = F.interpolate(region, size=(size, size), mode="bicubic", antialias=True)
    crop = region[0].permute(1, 2, 0)
    return crop.flip(1) if flip else crop.contiguous()


def rescale_box(box: tuple[int, int, int, int], full: tuple[int, int],
                got: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` of an image of size ``full`` (W, H) moved onto its decode of size ``got``."""
    if full == got:
        return box
    sx, sy = got[0] / full[0], got[1] / full[1]
    left, top, w, h = box
    x0, y0 = min(int(left * sx), got[0] - 1), min(int(top * sy), got[1] - 1)
    x1 = min(max(x0 + 1, round((left + w) * sx)), got[0])
    y1 = min(max(y0 + 1, round((top + h) * sy)), got[1])
    return x0, y0, x1 - x0, y1 - y0
