"""sklearn digits: scaling to uint8 and the fixed stratified split."""

from __future__ import annotations

import numpy as np

from adasim_ray.data import digits as digits_module
from adasim_ray.data import open_source


def test_sizes_and_shapes() -> None:
    train, test = open_source("digits", "train"), open_source("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.load(0).shape == (8, 8, 1) and train.load(0).dtype == np.uint8
    assert (train.channels, train.native_size, train.num_classes) == (1, 8, 10)


def test_split_is_a_partition_stratified_and_fixed() -> None:
    labels = digits_module._all_digits()[1]
    train = digits_module.split_indices(labels, "train")
    test = digits_module.split_indices(labels, "test")
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).tolist() == list(range(labels.size))
    per_class = np.bincount(labels[test], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(per_class - 0.2) < 0.01)
    np.testing.assert_array_equal(test, digits_module.split_indices(labels, "test"))


def test_pixels_scaled_to_full_range() -> None:
    source = open_source("digits", "train")
    pixels = np.stack(source.load_many(np.arange(len(source)))).astype(np.float64)
    assert pixels.min() == 0 and pixels.max() == 255
    # 17 grey levels in, 17 distinct byte values out.
    assert np.unique(pixels).size == 17
    assert abs(pixels.mean() / 255 - digits_module.DIGITS_MEAN[0]) < 1e-3
    assert abs(pixels.std() / 255 - digits_module.DIGITS_STD[0]) < 1e-3


def test_index_round_trip_and_labels() -> None:
    source = open_source("digits", "test")
    all_images, all_labels = digits_module._all_digits()
    positions = digits_module.split_indices(all_labels, "test")
    for i in (0, 100, len(source) - 1):
        np.testing.assert_array_equal(source.load(i), source.load_many([i])[0])
        np.testing.assert_array_equal(source.load(i), all_images[positions[i]])
        assert source.labels[i] == all_labels[positions[i]]
