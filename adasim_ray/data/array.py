"""A source whose images are one in-memory ``uint8`` array ``[N, H, W, C]``.

MNIST and sklearn digits are small enough to keep decoded in memory, so a partner fetch
(:meth:`ArraySource.load_many`) is a single numpy take instead of ``B`` decodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adasim_ray.data.source import ImageSource


class ArraySource(ImageSource):
    """Images held as one array ``[N, H, W, C]`` of ``uint8``.

    Args:
        name: ``"<spec>:<split>"`` for messages.
        images: ``uint8`` array ``[N, H, W, C]`` with ``C`` in ``{1, 3}``; kept as given
            (read-only views are fine: :meth:`load` returns copies).
        labels: int64 class ids ``[N]`` or ``None``.
        num_classes: number of classes, or ``None`` without labels.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
        class_names: optional name per class id.

    Examples:
        >>> import numpy as np
        >>> images = np.zeros((4, 2, 2, 1), dtype=np.uint8)
        >>> source = ArraySource("toy:train", images, None, None, (0.0,), (1.0,))
        >>> [image.shape for image in source.load_many([3, 0])]
        [(2, 2, 1), (2, 2, 1)]
    """

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        labels: np.ndarray | None,
        num_classes: int | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        class_names: tuple[str, ...] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"{name}: images must be uint8 [N, H, W, C] with C in (1, 3), "
                f"got {images.dtype} {images.shape}"
            )
        if labels is not None and labels.shape != (images.shape[0],):
            raise ValueError(f"{name}: {labels.shape[0]} labels for {images.shape[0]} images")
        self.name = name
        self._images = images
        self.labels = None if labels is None else labels.astype(np.int64, copy=False)
        self.num_classes = num_classes
        self.class_names = class_names
        self.channels = int(images.shape[-1])
        self.mean = mean
        self.std = std
        height, width = images.shape[1:3]
        self.native_size = int(height) if height == width else None

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def _load(self, index: int) -> np.ndarray:
        # A copy, so that a transform writing into its input cannot corrupt the data set
        # (and torch.from_numpy does not warn about a read-only buffer).
        return self._images[index].copy()

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Return the images at ``indices`` with one numpy take (fancy indexing copies)."""
        idx = self._check_indices(indices)
        return list(self._images[idx])
