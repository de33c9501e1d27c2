"""Where the splits of an on-disk data set live (shared by image folders and Parquet shards).

A ``folder:PATH`` or ``parquet:PATH`` data set has one of two layouts:

* **split layout**: ``PATH`` holds a ``train/`` sub-folder and a ``test/`` one (ImageNet's
  ``val/`` is accepted as the test split when there is no ``test/``). The layout is
  recognised by the presence of any of these three sub-folders, so a class cannot be named
  ``train``, ``test`` or ``val`` at the top level of a single-split folder.
* **single split**: ``PATH`` itself is the train split. Asking for its ``test`` split is a
  :class:`DataError`: we never carve a held-out set silently, because the evaluation
  numbers would then depend on a hidden choice. Make ``PATH/train`` and ``PATH/test``.
"""

from __future__ import annotations

from pathlib import Path

from adasim_ray.data.errors import DataError
from adasim_ray.data.source import SPLITS

SPLIT_DIRS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val")}

#: Images per row group in the Parquet shards ``adasim-ray prepare`` writes. A random read
#: costs one whole group, so small groups suit the partner fetch; the measurement behind
#: the choice is ``benchmarks/parquet_access.py --rows-per-group`` (README, Parquet).
ROWS_PER_GROUP = 8


def existing_root(spec: str, path: str | Path) -> Path:
    """``path`` expanded and resolved; a :class:`DataError` naming ``spec`` unless a directory."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{spec}: no such directory {root}")
    if not root.is_dir():
        raise DataError(f"{spec}: {root} is not a directory")
    return root.resolve()


def split_layout(root: Path) -> dict[str, Path]:
    """Map each split present under ``root`` to its directory (see the module docstring)."""
    found = {
        split: next((root / d for d in dirs if (root / d).is_dir()), None)
        for split, dirs in SPLIT_DIRS.items()
    }
    if any(path is not None for path in found.values()):
        return {split: path for split, path in found.items() if path is not None}
    return {"train": root}


def resolve_split(root: Path, split: str, spec: str) -> Path:
    """Directory of ``split`` under ``root``.

    Raises:
        DataError: unknown split, or the split is absent (single-split data set asked for
            ``test``, or a split layout missing that sub-folder).
    """
    if split not in SPLITS:
        raise DataError(f"{spec}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    layout = split_layout(root)
    if split in layout:
        return layout[split]
    if layout.get("train") == root:
        raise DataError(
            f"{spec}: {root} is a single split (no train/ or test/ sub-folder), so it has no "
            f"'{split}' split; put the images in {root}/train and {root}/test"
        )
    wanted = " or ".join(f"{d}/" for d in SPLIT_DIRS[split])
    raise DataError(f"{spec}: {root} has no {wanted} sub-folder for the '{split}' split")
