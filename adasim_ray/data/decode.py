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
        raise DataError(
            f"{what}: cannot decode image ({one_line(exc)}); --set skip_corrupt=true leaves "
            "such images out"
        ) from exc
    return np.array(rgb, dtype=np.uint8)


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
