"""Fixtures for the evaluation tests: an in-memory ImageSource and sklearn digits splits.

The data module is developed separately; these tests rely only on the ImageSource
contract (``len``, ``load_many(indices) -> list of (H, W, C) uint8``, ``labels``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_digits


class ArraySource:
    """A minimal ImageSource over an (N, H, W, C) uint8 array, recording load_many calls."""

    def __init__(self, images: np.ndarray | list[np.ndarray], labels: np.ndarray | None) -> None:
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.calls: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.images)

    def load_many(self, indices: np.ndarray) -> list[np.ndarray]:
        self.calls.append(np.asarray(indices).copy())
        return [self.images[int(i)] for i in indices]


@pytest.fixture
def make_source() -> Callable[..., ArraySource]:
    return ArraySource


@pytest.fixture(scope="session")
def digits_split() -> tuple[ArraySource, ArraySource]:
    """sklearn digits as (8, 8, 1) uint8 images, a seeded 2/3 train, 1/3 test split."""
    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    cut = 2 * len(images) // 3
    train, test = order[:cut], order[cut:]
    return (ArraySource(images[train], digits.target[train]),
            ArraySource(images[test], digits.target[test]))
