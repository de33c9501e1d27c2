"""An image folder in the ImageNet layout: one sub-folder of JPEG/PNG files per class.

``folder:PATH`` is either a split layout (``PATH/train``, ``PATH/test`` or ``PATH/val``) or
a single split (see :mod:`adasim_ray.data.layout`). Inside a split folder:

* **Classes** are its sub-folders, sorted by name; class id = position in that order. The
  class list is the sorted union over the splits present, so ``train`` and ``test`` agree on
  the ids even when a class is missing from one of them. Hidden folders are ignored.
* **Images** are files ending in ``.jpg``, ``.jpeg`` or ``.png`` (any case) anywhere below a
  class folder; other files are ignored. The data set index is the position in the order
  (class id, path inside the class folder), so it is the same on every machine.
* A split folder holding only loose images (no class sub-folders) is an unlabelled data set
  (``labels`` is ``None``); one mixing loose images and class folders is an error.
* With ``labels=False`` (the config's ``data_labels: none``) the sub-folders are not classes:
  every image anywhere below the split folder is one unlabelled image (a nested folder of
  photos by date, say), in sorted path order.

Images are decoded lazily in :meth:`FolderSource.load`, always to RGB (:mod:`decode`).
``native_size`` is the side of the images when a sample of their headers is all one square
size (:func:`~adasim_ray.data.decode.native_size_from_headers`), else None (224 px views).

Corrupt files. Finding them needs a full decode of every file, far too slow to do on every
open of ImageNet, so by default a corrupt file raises a :class:`DataError` naming it when it
is loaded. With ``skip_corrupt=True`` every file is decoded once at open time (in threads);
the bad ones are left out, listed in ``skipped`` and logged, and the indices are positions
among the kept files. ``N`` never changes after opening and never changes silently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from adasim_ray.data.decode import decode_image, find_undecodable, native_size_from_headers
from adasim_ray.data.errors import DataError
from adasim_ray.data.layout import existing_root, resolve_split, split_layout
from adasim_ray.data.source import IMAGENET_MEAN, IMAGENET_STD, ImageSource

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


def _visible_dirs(path: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(directory: Path) -> list[str]:
    """Image files below ``directory``, as absolute paths, in a deterministic sorted order."""
    found: list[str] = []
    for current, dirs, files in os.walk(directory, followlinks=True):
        # Sorting in place fixes the walk order itself, not just each listing.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(current, f) for f in sorted(files) if _is_image(f))
    return found


def folder_classes(root: Path) -> list[str]:
    """Sorted union of the class folder names over every split of ``root``."""
    names: set[str] = set()
    for split_dir in split_layout(root).values():
        names.update(_visible_dirs(split_dir))
    return sorted(names)


class FolderSource(ImageSource):
    """A split of an image folder; images decoded on demand (module docstring for the rules).

    Args:
        path: the folder (``~`` is expanded).
        split: ``"train"`` or ``"test"``.
        skip_corrupt: decode every file now and leave out those that fail (listed in
            ``skipped``) instead of raising when one is loaded.
        spec: the spec string for messages and ``name``; default ``"folder:<path>"``.
        labels: False: sub-folders are not classes, every image below is unlabelled.

    Attributes:
        files: absolute path of each image, position = data set index.
        root: the resolved folder; ``split_dir`` the folder of this split.

    Examples:
        >>> source = FolderSource("/data/imagenet", "test")  # doctest: +SKIP
        >>> source.load(0).shape[-1], source.class_names[:2]  # doctest: +SKIP
        (3, ('n01440764', 'n01443537'))
    """

    encoded_images = True

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        skip_corrupt: bool = False,
        spec: str | None = None,
        labels: bool = True,
    ) -> None:
        spec = spec or f"folder:{path}"
        self.name = f"{spec}:{split}"
        self.root = existing_root(spec, path)
        self.split_dir = resolve_split(self.root, split, spec)

        classes = _visible_dirs(self.split_dir) if labels else []
        loose = [
            entry.name
            for entry in os.scandir(self.split_dir)
            if entry.is_file() and _is_image(entry.name)
        ]
        if labels and classes and loose:
            raise DataError(
                f"{self.name}: {self.split_dir} mixes loose images (e.g. {loose[0]}) with "
                "class sub-folders; move the images into their class folders"
            )
        files: list[str] = []
        labels: list[int] = []
        if classes:
            all_classes = folder_classes(self.root)
            class_id = {name: k for k, name in enumerate(all_classes)}
            for name in classes:
                found = list_images(self.split_dir / name)
                files.extend(found)
                labels.extend([class_id[name]] * len(found))
            self.class_names = tuple(all_classes)
        else:
            files = (list_images(self.split_dir) if not labels
                     else [str(self.split_dir / f) for f in sorted(loose)])
            self.class_names = None
        if not files:
            raise DataError(
                f"{self.name}: no .jpg/.jpeg/.png images under {self.split_dir} "
                "(expected class sub-folders of images)"
            )

        label_array = np.asarray(labels, dtype=np.int64) if classes else None
        if skip_corrupt:
            bad = find_undecodable(files, Path)
            if bad:
                self.skipped = tuple(files[k] for k in bad)
                keep = np.setdiff1d(np.arange(len(files)), bad)
                files = [files[k] for k in keep]
                label_array = None if label_array is None else label_array[keep]
                log.warning(
                    "%s: skipped %d corrupt image(s) of %d, e.g. %s",
                    self.name,
                    len(bad),
                    len(bad) + len(files),
                    self.skipped[0],
                )
                if not files:
                    raise DataError(f"{self.name}: every image under {self.split_dir} is corrupt")

        self.files = files
        self.labels = label_array
        self.num_classes = None if self.class_names is None else len(self.class_names)
        self.channels = 3
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.native_size = native_size_from_headers(files, Path)

    def encoded(self, index: int) -> str:
        return self.files[self._check_index(index)]

    def where(self, index: int) -> str:
        return f"{self.name}: {self.files[self._check_index(index)]}"

    def location(self, index: int) -> dict[str, str | int]:
        return {"path": str(self.files[self._check_index(index)])}

    def identity(self, index: int) -> str:
        path = self.files[self._check_index(index)]
        return f"{os.path.relpath(path, self.root)}:{os.path.getsize(path)}"

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        return decode_image(Path(self.files[index]), self.where(index))
