"""A labelled Parquet data set with planted label errors and duplicates, for the audit tests."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from adasim_ray.data import open_source
from adasim_ray.data.parquet import SHARD_SCHEMA


@dataclass
class PlantedSet:
    """Where the planted cases are (train split ids)."""

    root: Path
    flipped: np.ndarray  # ids whose label was changed to another class
    true_labels: np.ndarray  # the labels before flipping, per train id
    duplicates: list[tuple[int, int]]  # (original id, copy id), original < copy


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_split(directory: Path, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True)
    table = pa.table(
        {
            "index": pa.array(np.arange(len(images)), pa.int64()),
            "image": pa.array([_png(im) for im in images], pa.binary()),
            "label": pa.array(labels, pa.int64()),
        },
        schema=SHARD_SCHEMA,
    )
    pq.write_table(table, directory / "part-00000.parquet")


def write_planted_digits(
    root: Path, flips: int = 20, duplicates: int = 10, seed: int = 0
) -> PlantedSet:
    """sklearn digits as ``parquet:root`` (train/ and test/), with ``flips`` train labels changed
    to another class and ``duplicates`` train images copied to new ids (labels kept)."""
    rng = np.random.default_rng(seed)
    train, test = open_source("digits", "train"), open_source("digits", "test")
    images = np.stack(train.load_many(np.arange(len(train))))
    labels = train.labels.copy()
    originals = rng.choice(len(images), size=duplicates, replace=False)
    # Copies go to random positions, so that the planted ids are spread over the data set.
    n = len(images) + duplicates
    copy_ids = np.sort(rng.choice(n, size=duplicates, replace=False))
    slots = np.setdiff1d(np.arange(n), copy_ids)
    all_images = np.empty((n, *images.shape[1:]), dtype=images.dtype)
    all_labels = np.empty(n, dtype=np.int64)
    all_images[slots], all_labels[slots] = images, labels
    new_id = slots  # old train id -> id in the planted set
    pairs = []
    for original, copy in zip(originals, rng.permutation(copy_ids), strict=True):
        all_images[copy], all_labels[copy] = images[original], labels[original]
        a, b = sorted((int(new_id[original]), int(copy)))
        pairs.append((a, b))
    planted = {i for pair in pairs for i in pair}
    candidates = np.array([i for i in range(n) if i not in planted])
    flipped = np.sort(rng.choice(candidates, size=flips, replace=False))
    true_labels = all_labels.copy()
    all_labels[flipped] = (all_labels[flipped] + rng.integers(1, 10, size=flips)) % 10
    _write_split(root / "train", all_images, all_labels)
    test_images = np.stack(test.load_many(np.arange(len(test))))
    _write_split(root / "test", test_images, test.labels)
    return PlantedSet(root, flipped, true_labels, sorted(pairs))


@pytest.fixture
def planted_digits(tmp_path: Path) -> PlantedSet:
    """Digits as Parquet with 20 flipped train labels and 10 duplicated train images."""
    return write_planted_digits(tmp_path / "planted")
