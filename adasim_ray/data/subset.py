"""The first n images of a source: CPU-sized runs on a prefix of a larger data set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adasim_ray.data.errors import DataError
from adasim_ray.data.source import ImageSource


class FirstImages(ImageSource):
    """Images ``0 .. n-1`` of ``source``, with the same indices (a prefix keeps ids stable).

    Examples:
        >>> from adasim_ray.data import open_source
        >>> len(FirstImages(open_source("digits"), 100))
        100
    """

    def __init__(self, source: ImageSource, n: int) -> None:
        if not 1 <= n <= len(source):
            raise DataError(f"limit_images={n} must lie in [1, {len(source)}] for {source.name}")
        self.source, self.n = source, n
        self.name = f"{source.name}[:{n}]"
        self.labels = None if source.labels is None else source.labels[:n]
        self.num_classes = source.num_classes
        self.class_names = source.class_names
        self.channels = source.channels
        self.mean, self.std = source.mean, source.std
        self.native_size = source.native_size
        self.mirror_invariant = source.mirror_invariant
        self.skipped = source.skipped

    def __len__(self) -> int:
        return self.n

    def _load(self, index: int) -> np.ndarray:
        return self.source.load(index)

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        return self.source.load_many(self._check_indices(indices))


def first_images(source: ImageSource, n: int | None) -> ImageSource:
    """``source`` cut to its first ``n`` images; unchanged when ``n`` is None or >= its size."""
    return source if n is None or n >= len(source) else FirstImages(source, n)
