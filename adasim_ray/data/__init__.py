"""Indexed image sources: every sample carries its data set index.

AdaSim's partner fetch (Sec. 3.2) loads an arbitrary image ``x_j*`` by index, so each data
set is an :class:`ImageSource` with random access, opened from one spec string:
``mnist``, ``digits``, ``folder:PATH`` or ``parquet:PATH`` (:func:`open_source`).
:class:`IndexedDataset` turns a source into ``(index, image, label)`` samples for PyTorch,
and :func:`convert_folder_to_parquet` packs an image folder into Parquet shards.

Examples:
    >>> from adasim_ray.data import IndexedDataset, open_source
    >>> source = open_source("digits", "train")
    >>> index, image, label = IndexedDataset(source)[0]
    >>> index, image.dtype, 0 <= label < source.num_classes
    (0, dtype('uint8'), True)

The names below are imported on first use (PEP 562): ``adasim_ray.data.spec`` (the list of
data set kinds that the command line's help shows) is then read without torch or pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ArraySource": "array",
    "convert_folder_to_parquet": "convert",
    "NO_LABEL": "dataset",
    "IndexedDataset": "dataset",
    "DigitsSource": "digits",
    "DataError": "errors",
    "FolderSource": "folder",
    "MnistSource": "mnist",
    "ParquetSource": "parquet",
    "IMAGENET_MEAN": "source",
    "IMAGENET_STD": "source",
    "SPLITS": "source",
    "ImageSource": "source",
    "fingerprint": "source",
    "DataSpec": "spec",
    "open_source": "spec",
    "parse_spec": "spec",
    "SampledImages": "subset",
    "sample_images": "subset",
    "stratified_sample": "subset",
    "describe": "subset",
}

if TYPE_CHECKING:
    from adasim_ray.data.array import ArraySource
    from adasim_ray.data.convert import convert_folder_to_parquet
    from adasim_ray.data.dataset import NO_LABEL, IndexedDataset
    from adasim_ray.data.digits import DigitsSource
    from adasim_ray.data.errors import DataError
    from adasim_ray.data.folder import FolderSource
    from adasim_ray.data.mnist import MnistSource
    from adasim_ray.data.parquet import ParquetSource
    from adasim_ray.data.source import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        SPLITS,
        ImageSource,
        fingerprint,
    )
    from adasim_ray.data.spec import DataSpec, open_source, parse_spec
    from adasim_ray.data.subset import SampledImages, describe, sample_images, stratified_sample


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NO_LABEL",
    "SPLITS",
    "ArraySource",
    "DataError",
    "DataSpec",
    "DigitsSource",
    "SampledImages",
    "FolderSource",
    "ImageSource",
    "IndexedDataset",
    "MnistSource",
    "ParquetSource",
    "convert_folder_to_parquet",
    "describe",
    "fingerprint",
    "open_source",
    "parse_spec",
    "sample_images",
    "stratified_sample",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
