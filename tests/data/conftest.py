"""Tiny image folders built with PIL in ``tmp_path`` for the data tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@dataclass
class BuiltFolder:
    """A folder written by :func:`make_folder` and what it should read back as."""

    root: Path
    # split -> list of (absolute path, class name, RGB array written) in expected index order
    images: dict[str, list[tuple[Path, str, np.ndarray]]] = field(default_factory=dict)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def make_folder(
    root: Path,
    layout: dict[str, dict[str, int]],
    seed: int = 0,
) -> BuiltFolder:
    """Write ``layout[split][class] = count`` small RGB PNGs of varying sizes.

    ``split`` ``""`` writes the classes straight under ``root`` (a single-split folder).
    File names are chosen so that the sorted order differs from the creation order.
    """
    rng = np.random.default_rng(seed)
    built = BuiltFolder(root)
    for split, classes in layout.items():
        entries = []
        for name in sorted(classes):
            files = []
            for k in range(classes[name]):
                h, w = int(rng.integers(4, 9)), int(rng.integers(4, 9))
                array = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                # Reverse-numbered names: creation order is not the index order.
                path = root / split / name / f"img_{classes[name] - k:03d}.png"
                write_png(path, array)
                files.append((path, name, array))
            entries.extend(sorted(files, key=lambda item: item[0].name))
        built.images[split or "train"] = entries
    return built


@pytest.fixture
def split_folder(tmp_path: Path) -> BuiltFolder:
    """train/ with classes cat, dog, emu; test/ with cat and dog only."""
    return make_folder(
        tmp_path / "images",
        {"train": {"dog": 3, "cat": 2, "emu": 2}, "test": {"cat": 2, "dog": 1}},
    )


@pytest.fixture
def single_folder(tmp_path: Path) -> BuiltFolder:
    """A single-split folder: class sub-folders straight under the root."""
    return make_folder(tmp_path / "flat", {"": {"b": 2, "a": 3}}, seed=1)


@pytest.fixture
def folder_factory() -> Callable[..., BuiltFolder]:
    """:func:`make_folder`, for tests that need their own layout (fixtures, not imports,
    so the test modules do not depend on how pytest names conftest modules)."""
    return make_folder


@pytest.fixture
def png_writer() -> Callable[[Path, np.ndarray], None]:
    """:func:`write_png` as a fixture."""
    return write_png
