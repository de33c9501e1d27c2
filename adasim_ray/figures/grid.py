"""Grids of image cells with captions (matplotlib, Agg): the contact sheets of the audit and
Fig. 1's supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def show(ax: Any, image: np.ndarray, title: str, color: str = "black") -> None:
    grey = image.shape[-1] == 1 or bool(
        (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    )
    if grey:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=7, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def figure(rows: int, cols: int, title: str, lines: int = 1) -> tuple[Any, np.ndarray]:
    """A grid of image cells of ~1 inch, with room for ``lines`` caption lines and a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(rows, 1)
    cell = 1.0  # inches
    caption = 0.05 + 0.15 * lines
    head = 0.3 + caption
    width, height = (cell + 0.12) * cols, (cell + caption) * rows + head
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - head / height, wspace=0.12,
        hspace=caption / cell,
    )  # fmt: skip
    fig.suptitle(title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
