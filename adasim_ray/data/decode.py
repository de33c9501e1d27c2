"""Decoding of encoded images (JPEG, PNG, ...) into the package's image convention.

Folder and Parquet sources always decode to RGB, ``uint8`` ``(H, W, 3)``, whatever the file
holds (grey, palette, CMYK, RGBA: alpha is dropped). One channel count per data set keeps
the backbone's ``in_chans`` and the normalisation fixed; grey data sets that need one
channel are MNIST and digits, which have their own sources.

Corruption is found by a full decode, not by PIL's ``Image.verify()``: ``verify`` accepts a
truncated JPEG that then fails in ``load``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from adasim_ray.data.errors import DataError

T = TypeVar("T")
_BLOCK = 4096


def one_line(exc: BaseException) -> str:
    """``"Type: message"`` of an exception on a single line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def undecodable(what: str, exc: BaseException) -> DataError:
    """The one-line error for an image that cannot be decoded (``what`` names it)."""
    return DataError(f"{what}: cannot decode image ({one_line(exc)}); --set skip_corrupt=true "
                     "leaves such images out")


def decode_image(data: bytes | Path, what: str) -> np.ndarray:
    """Decode an encoded image (bytes or a file) into an RGB ``uint8`` array ``(H, W, 3)``.

    Args:
        data: the encoded bytes, or the path of an image file.
        what: names the image in the error message (spec and file, or shard and index).

    Raises:
        DataError: the image is missing, truncated or not an image PIL can read.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            rgb = image.convert("RGB")
    # PIL raises OSError, SyntaxError, ValueError, EOFError, DecompressionBombError, ...
    # depending on the codec: every one of them means "this image cannot be used".
    except Exception as exc:
        raise undecodable(what, exc) from exc
    return np.array(rgb, dtype=np.uint8)


HEADER_SAMPLE = 256


def native_size_from_headers(
    items: Sequence[T], read: Callable[[T], bytes | Path], sample: int = HEADER_SAMPLE
) -> int | None:
    """The side shared by the images of ``items`` when they are square and of one size,
    else None, from the headers (no pixel decoded) of up to ``sample`` of them spread
    evenly over the split: a few milliseconds at any N. The size only picks the default
    training size (a view is cropped and resized to it whatever an image's own size), so
    an odd image outside the sample costs nothing but a resize. A header that cannot be
    read counts as a mixed size (the image's own decode reports it)."""
    if not items:
        return None
    picks = np.unique(np.linspace(0, len(items) - 1, min(sample, len(items))).astype(np.int64))
    sizes = set()
    for k in picks:
        data = read(items[int(k)])
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
                sizes.add(image.size)
        except Exception:  # noqa: BLE001 - an unreadable header only means "unknown size"
            return None
        if len(sizes) > 1:
            return None
    (width, height), = sizes
    return int(width) if width == height else None


def find_undecodable(
    items: Sequence[T],
    read: Callable[[T], bytes | Path],
    workers: int | None = None,
) -> list[int]:
    """Positions in ``items`` whose image does not decode (a full decode of every item).

    Decoding releases the GIL inside PIL, so a thread pool scales over cores without
    pickling anything.

    Args:
        items: whatever identifies an image (file paths, row numbers).
        read: turns an item into encoded bytes or a path for :func:`decode_image`.
        workers: threads; default ``min(32, os.cpu_count())``.
    """

    def ok(item: T) -> bool:
        try:
            decode_image(read(item), "")
        except DataError:
            return False
        return True

    workers = workers or min(32, os.cpu_count() or 1)
    bad: list[int] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # In blocks, so that a million-image folder does not hold a million futures.
        for start in range(0, len(items), _BLOCK):
            block = items[start : start + _BLOCK]
            bad.extend(start + k for k, good in enumerate(pool.map(ok, block)) if not good)
    return bad
