"""A seeded, class-stratified sample of a source: CPU-sized runs and evaluations on part of a
data set that still show all of it.

A prefix is the wrong subset of a real data set: an image folder is sorted by class, so its
first 3,000 images are its first few classes, and a k-NN over a prefix measures a different,
easier task. :func:`sample_images` instead draws ``n`` images at random, stratified by
class where the source has labels: every class keeps its share of the split (largest
remainder rounding, and at least one image per class when ``n`` allows). The draw depends
only on ``(seed, n, N, labels)``, so every run, rank and process that opens the same data
with the same setting gets the same images. Indices of the sample are positions in it, in
increasing order of the source's indices (a class-sorted folder stays class-sorted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adasim_ray.data.errors import DataError
from adasim_ray.data.source import ImageSource

# Mixed into the seed so that the subset draw never shares a stream with another use of the
# same seed value.
_SUBSET_STREAM = 0x5B5E7


def stratified_sample(labels: np.ndarray | None, num_images: int, n: int,
                      seed: int) -> np.ndarray:
    """Sorted positions of ``n`` of ``num_images`` images, drawn with ``seed``: per class in
    proportion to its size when ``labels`` are given, else uniformly.

    Examples:
        >>> labels = np.repeat(np.arange(4), 25)  # 4 classes, class-sorted
        >>> np.bincount(labels[stratified_sample(labels, 100, 20, seed=0)]).tolist()
        [5, 5, 5, 5]
    """
    if not 1 <= n <= num_images:
        raise ValueError(f"n must lie in [1, {num_images}], got {n}")
    rng = np.random.default_rng([seed, n, num_images, _SUBSET_STREAM])
    if labels is None:
        return np.sort(rng.choice(num_images, size=n, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / num_images
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders take the images the floors left over (ties: the smaller class id).
    order = np.lexsort((classes, -(exact - quota)))
    quota[order[: n - int(quota.sum())]] += 1
    if n >= len(classes):
        # Every class shows up: a class rounded to zero takes one from the largest quota.
        for k in np.flatnonzero(quota == 0):
            quota[int(np.argmax(quota))] -= 1
            quota[k] = 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
              for c, q in zip(classes, quota, strict=True) if q]
    return np.sort(np.concatenate(picked))


class SampledImages(ImageSource):
    """``n`` images of ``source`` chosen by :func:`stratified_sample`; index ``k`` of the
    sample is image ``positions[k]`` of the source.

    Examples:
        >>> from adasim_ray.data import open_source
        >>> len(SampledImages(open_source("digits"), 100))
        100
    """

    def __init__(self, source: ImageSource, n: int, seed: int = 0, *,
                 setting: str = "limit_images") -> None:
        if not 1 <= n <= len(source):
            raise DataError(f"{setting}={n} must lie in [1, {len(source)}] for {source.name}")
        self.source, self.n, self.seed = source, n, seed
        self.positions = stratified_sample(source.labels, len(source), n, seed)
        self.name = f"{source.name}[{n} sampled, seed {seed}]"
        self.labels = None if source.labels is None else source.labels[self.positions]
        self.num_classes = source.num_classes
        self.class_names = source.class_names
        self.channels = source.channels
        self.mean, self.std = source.mean, source.std
        self.native_size = source.native_size
        self.mirror_invariant = source.mirror_invariant
        self.skipped = source.skipped
        self.encoded_images = source.encoded_images

    def __len__(self) -> int:
        return self.n

    def _load(self, index: int) -> np.ndarray:
        return self.source.load(int(self.positions[index]))

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        return self.source.load_many(self.positions[self._check_indices(indices)])

    def encoded(self, index: int) -> bytes | str | None:
        return self.source.encoded(int(self.positions[self._check_index(index)]))

    def encoded_many(self, indices: Sequence[int] | np.ndarray) -> list[bytes | str | None]:
        return self.source.encoded_many(self.positions[self._check_indices(indices)])

    def identity(self, index: int) -> str:
        return self.source.identity(int(self.positions[self._check_index(index)]))

    def where(self, index: int) -> str:
        return self.source.where(int(self.positions[self._check_index(index)]))

    def location(self, index: int) -> dict[str, str | int]:
        return self.source.location(int(self.positions[self._check_index(index)]))


def sample_images(source: ImageSource, n: int | None, seed: int = 0, *,
                  setting: str = "limit_images") -> ImageSource:
    """``source`` cut to a stratified sample of ``n`` images (:class:`SampledImages`);
    unchanged when ``n`` is None or >= its size. ``setting`` names the config field in the
    error for an ``n`` below 1."""
    if n is None or n >= len(source):
        return source
    return SampledImages(source, n, seed, setting=setting)


def describe(source: ImageSource) -> str:
    """One line on what a (possibly sampled) split holds: ``N of M images (stratified
    sample, seed s), K classes, 28 px`` or ``mixed sizes``; an unlabelled split's sample is a
    plain (``random``) one."""
    base = source.source if isinstance(source, SampledImages) else source
    if isinstance(source, SampledImages):
        kind = "stratified" if source.labels is not None else "random"
        count = f"{len(source)} of {len(base)} images ({kind} sample, seed {source.seed})"
    else:
        count = f"all {len(source)} images"
    classes = (f"{source.num_classes} classes" if source.num_classes is not None
               else "unlabelled")
    size = (f"{source.native_size} px" if source.native_size
            else "mixed or non-square sizes")
    return f"{base.name}: {count}, {classes}, {size}"
