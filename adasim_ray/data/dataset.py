"""A PyTorch dataset whose samples carry their data set index.

AdaSim writes the teacher feature of image ``i`` into row ``i`` of the similarity cache and
looks up the partner ``j*`` planned for ``i`` (Sec. 3.2, Eq. 11), so a sample is
``(index, image, label)`` rather than ``(image, label)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from adasim_ray.data.source import ImageSource

NO_LABEL = -1


class IndexedDataset(Dataset):
    """``(index, transform(image), label)`` for every image of an :class:`ImageSource`.

    Args:
        source: the images.
        transform: applied to the ``uint8`` ``(H, W, C)`` array; ``None`` returns it as is.

    ``label`` is ``-1`` for a source without labels, so batches always collate to tensors.
    ``__getitems__`` lets a ``DataLoader`` fetch a whole batch with one
    :meth:`ImageSource.load_many` call (a single array take for MNIST).

    Examples:
        >>> from adasim_ray.data import open_source
        >>> dataset = IndexedDataset(open_source("digits", "test"))
        >>> index, image, label = dataset[5]
        >>> index, image.shape, label == dataset.source.label(5)
        (5, (8, 8, 1), True)
    """

    def __init__(
        self, source: ImageSource, transform: Callable[[np.ndarray], Any] | None = None
    ) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def _label(self, index: int) -> int:
        labels = self.source.labels
        return NO_LABEL if labels is None else int(labels[index])

    def _sample(self, index: int, image: np.ndarray) -> tuple[int, Any, int]:
        out = image if self.transform is None else self.transform(image)
        return index, out, self._label(index)

    def __getitem__(self, index: int) -> tuple[int, Any, int]:
        index = int(index)
        return self._sample(index, self.source.load(index))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[int, Any, int]]:
        """Batch fetch used by ``torch.utils.data.DataLoader`` when present."""
        images = self.source.load_many(np.asarray(indices, dtype=np.int64))
        return [self._sample(int(i), image) for i, image in zip(indices, images, strict=True)]
