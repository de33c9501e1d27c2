"""IndexedDataset: (index, image, label) samples and the batched fetch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from adasim_ray.data import NO_LABEL, ArraySource, ImageSource, IndexedDataset, open_source


class CountingSource(ArraySource):
    """Counts the calls of the batch path."""

    def __init__(self, source: ImageSource) -> None:
        images = np.stack(source.load_many(np.arange(len(source))))
        super().__init__("count:train", images, source.labels, 10, (0.5,), (0.5,))
        self.batch_calls = 0

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        self.batch_calls += 1
        return super().load_many(indices)


def test_sample_is_index_image_label() -> None:
    source = open_source("digits", "test")
    index, image, label = IndexedDataset(source)[7]
    assert index == 7 and label == source.labels[7]
    np.testing.assert_array_equal(image, source.load(7))


def test_transform_is_applied() -> None:
    dataset = IndexedDataset(open_source("digits", "test"), transform=lambda x: x.sum())
    assert dataset[3][1] == int(dataset.source.load(3).sum())
    assert len(dataset) == 359


def test_unlabelled_source_gives_minus_one() -> None:
    images = np.zeros((3, 2, 2, 1), np.uint8)
    dataset = IndexedDataset(ArraySource("toy:train", images, None, None, (0.0,), (1.0,)))
    index, image, label = dataset[2]
    assert (index, image.shape, label) == (2, (2, 2, 1), -1) and NO_LABEL == -1


def test_dataloader_batches_carry_their_indices() -> None:
    source = CountingSource(open_source("digits", "test"))
    dataset = IndexedDataset(source, transform=lambda x: torch.from_numpy(x).float())
    sampler = [5, 300, 0, 17, 42, 358]
    loader = DataLoader(dataset, batch_size=3, sampler=sampler)
    batches = list(loader)
    assert source.batch_calls == 2  # one load_many per batch, through __getitems__
    indices = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[2] for b in batches])
    assert indices.tolist() == sampler
    assert labels.tolist() == source.labels[sampler].tolist()
    first = batches[0][1]
    assert first.shape == (3, 8, 8, 1)
    torch.testing.assert_close(first[1], torch.from_numpy(source.load(300)).float())
