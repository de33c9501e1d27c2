"""scikit-learn's 8 x 8 handwritten digits (1,797 images, 10 classes), for tiny tests.

The data ship inside scikit-learn, so nothing is downloaded. Pixels come as 17 grey levels
0 .. 16 and are scaled to ``uint8`` 0 .. 255 with ``round(v * 255 / 16)``.

Train/test split (there is no official one): stratified per class, 80 / 20, fixed seed.
For each class ``c`` (in order 0 .. 9) the class's original positions are permuted with
``numpy.random.default_rng(0)``-drawn permutations (one generator, classes consumed in
order) and the first ``round(0.2 * n_c)`` go to test. Each split keeps the original
dataset order, which gives 1,438 train and 359 test images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from adasim_ray.data.array import ArraySource
from adasim_ray.data.errors import DataError

TEST_FRACTION = 0.2
SPLIT_SEED = 0

# Pixel statistics of the train split after scaling to 0 .. 255, in [0, 1] units
# (tests/data/test_digits.py recomputes them).
DIGITS_MEAN: tuple[float] = (0.3055,)
DIGITS_STD: tuple[float] = (0.3759,)


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted original positions of ``split`` in the stratified 80/20 split described above."""
    rng = np.random.default_rng(SPLIT_SEED)
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[: int(round(TEST_FRACTION * members.size))])
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int64)


class DigitsSource(ArraySource):
    """sklearn digits: grey 8 x 8 images, 10 classes, 1,438 train / 359 test.

    Args:
        split: ``"train"`` or ``"test"`` of the fixed stratified split (module docstring).

    Examples:
        >>> source = DigitsSource("test")
        >>> len(source), source.load(0).shape, source.native_size
        (359, (8, 8, 1), 8)
    """

    mirror_invariant = False  # a mirrored digit is another symbol, or none

    def __init__(self, split: str = "train") -> None:
        if split not in ("train", "test"):
            raise DataError(f"digits: unknown split {split!r}; choose 'train' or 'test'")
        images, labels = _all_digits()
        keep = split_indices(labels, split)
        super().__init__(
            f"digits:{split}",
            images[keep],
            labels[keep],
            num_classes=10,
            mean=DIGITS_MEAN,
            std=DIGITS_STD,
            class_names=tuple(str(d) for d in range(10)),
        )
        self._split = split

    def __reduce__(self) -> tuple[type[DigitsSource], tuple[str]]:
        return (DigitsSource, (self._split,))
