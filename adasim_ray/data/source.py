"""Random access to one split of a data set, where every sample has its index.

AdaSim (Sec. 3.2, Eq. 11) pairs the anchor image ``x_i`` with a partner ``x_j*`` chosen from
the similarity cache, so the data pipeline must be able to load *any* image by its data set
index, not only stream them. :class:`ImageSource` is that contract; the concrete sources
(MNIST, sklearn digits, an image folder, Parquet shards) live in their own modules and are
opened from a one-string spec by :func:`adasim_ray.data.open_source`.

Images follow the package-wide convention: a numpy ``uint8`` array of shape ``(H, W, C)``
with ``C`` in ``{1, 3}``.
"""

from __future__ import annotations

import hashlib
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

# The normalisation every ImageNet-pretrained recipe (DINO included) uses; the default for
# sources without their own known statistics (folders, Parquet shards), in [0, 1] units.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

SPLITS: tuple[str, ...] = ("train", "test")


class ImageSource(ABC):
    """One split of a data set with random access by index ``0 .. len - 1``.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`__len__` and
    :meth:`_load`; :meth:`load_many` has a generic loop that in-memory sources replace by
    an array take.

    Attributes:
        name: ``"<spec>:<split>"``, e.g. ``"mnist:train"``; used in every error message.
        labels: int64 array ``[N]`` of class ids ``>= 0``, or ``None`` without labels.
        num_classes: number of classes, or ``None`` without labels.
        class_names: a name per class id where the source knows them, else ``None``.
        channels: ``C`` of every image, 1 (grey) or 3 (RGB).
        mean: per-channel mean of the pixels in [0, 1] units, for normalisation.
        std: per-channel standard deviation in [0, 1] units.
        native_size: side of the (square) images when they all share it, else ``None``.
        mirror_invariant: whether a horizontal flip keeps the meaning of an image (true of
            natural images; not of digits, where a mirrored 2 or 7 is another symbol or
            none). The training views flip only such images (``GlobalViews.for_source``).
        skipped: files or rows left out because they could not be decoded; non-empty only
            when the source was opened with ``skip_corrupt=True``. ``len(self)`` counts the
            kept images only, and indices are positions among the kept images.
        encoded_images: whether :meth:`encoded` gives the encoded file (folders, Parquet)
            rather than None (sources of decoded arrays).

    Examples:
        >>> from adasim_ray.data import open_source
        >>> source = open_source("digits", "train")
        >>> image = source.load(0)
        >>> image.shape, image.dtype
        ((8, 8, 1), dtype('uint8'))
    """

    name: str
    labels: np.ndarray | None
    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None
    mirror_invariant: bool = True
    skipped: tuple[str, ...] = ()
    encoded_images: bool = False

    @abstractmethod
    def __len__(self) -> int:
        """Number of images in this split."""

    @abstractmethod
    def _load(self, index: int) -> np.ndarray:
        """Decode image ``index``, already checked to be in range."""

    def load(self, index: int) -> np.ndarray:
        """Return image ``index`` as a ``uint8`` array ``(H, W, C)``.

        Raises:
            IndexError: ``index`` is outside ``0 .. len - 1`` (negative indices are not
                wrapped: a negative data set index is always a bug upstream).
            DataError: the image cannot be decoded (the message names the file or shard).
        """
        return self._load(self._check_index(index))

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Return the images at ``indices``, in that order (the partner fetch's batch path).

        Raises:
            IndexError: any index is out of range.
        """
        idx = self._check_indices(indices)
        return [self._load(int(i)) for i in idx]

    def encoded(self, index: int) -> bytes | str | None:
        """Image ``index`` still encoded: its bytes, or the path of its file; ``None`` for a
        source that holds decoded arrays. The training views read the header first and
        decode at a reduced scale where the crop allows (``adasim_ray.augmentations``)."""
        self._check_index(index)
        return None

    def encoded_many(self, indices: Sequence[int] | np.ndarray) -> list[bytes | str | None]:
        """:meth:`encoded` of each of ``indices``, in that order; a source that reads in
        blocks (Parquet row groups) reads each block once."""
        return [self.encoded(int(i)) for i in self._check_indices(indices)]

    def identity(self, index: int) -> str:
        """What identifies image ``index`` for :func:`fingerprint`, cheap to get: a file's
        name and size, a shard's name and the image's byte length; by default a hash of the
        decoded pixels (sources of arrays in memory)."""
        image = self.load(index)
        return hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]

    def where(self, index: int) -> str:
        """Where image ``index`` lives, for messages: its file, or its shard and row."""
        return f"{self.name}: image {index}"

    def location(self, index: int) -> dict[str, str | int]:
        """Where image ``index`` lives, as columns for a table (``adasim-ray audit``'s CSV
        files): ``{"path": FILE}`` in an image folder, ``{"shard": NAME, "row": ROW}`` in
        Parquet shards (the row counted from 0 within the shard); empty for a source held in
        memory, whose index is all there is."""
        self._check_index(index)
        return {}

    def label(self, index: int) -> int | None:
        """Class id of image ``index``, or ``None`` when the source has no labels."""
        index = self._check_index(index)
        return None if self.labels is None else int(self.labels[index])

    def _check_index(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} images")
        return i

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.size == 0:
            return idx.astype(np.int64).reshape(0)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(
                f"{self.name}: indices must be a 1-d integer array, got shape {idx.shape} "
                f"of {idx.dtype}"
            )
        n = len(self)
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            raise IndexError(f"{self.name}: index {bad} out of range for {n} images")
        return idx.astype(np.int64, copy=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"channels={self.channels}, num_classes={self.num_classes})"
        )


FINGERPRINT_SAMPLE = 64


def fingerprint(source: ImageSource, sample: int = FINGERPRINT_SAMPLE) -> str:
    """A short hash that tells data sets apart: N, and the identity and label of ``sample``
    images spread evenly over the split (a few file sizes or byte ranges, not a read of the
    data). A resumed run compares it with its checkpoint's: another data set under the same
    spec (files added, removed or replaced) is refused."""
    n = len(source)
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64)) if n else []
    digest = hashlib.sha256(f"{n}".encode())
    for i in picks:
        digest.update(f"|{source.identity(int(i))}:{source.label(int(i))}".encode())
    return digest.hexdigest()[:16]
