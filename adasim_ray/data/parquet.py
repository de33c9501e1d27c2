"""Parquet shards of encoded images: the format and its reader.

``parquet:PATH`` is a directory of ``*.parquet`` shards, or a split layout with ``train/``
and ``test/`` (or ``val/``) sub-folders of shards (:mod:`adasim_ray.data.layout`). Every
row is one image:

========  ======================  ===================================================
column    type                    meaning
========  ======================  ===================================================
index     int64, not null         the data set index; over all shards of a split the
                                  indices are exactly ``0 .. N-1``, each once
image     binary                  the encoded file (PNG, JPEG, ...), decoded to RGB
label     int64, nullable         class id ``>= 0``; all null (or no column) means
                                  an unlabelled data set
========  ======================  ===================================================

Other columns are ignored (the converter adds ``path``, the source file, for provenance).
The schema metadata key ``adasim_ray`` may hold JSON ``{"classes": [...]}`` giving the class
names; without it ``num_classes`` is ``max(label) + 1``.

The reader loads a split into one in-memory Arrow table sorted by ``index``, so
:meth:`ParquetSource.load` is a slice and a decode. That costs the encoded size of the split
in RAM on every process that opens it (ImageNet train: about 140 GB), so it is meant for
data sets up to a few tens of GB.

``skip_corrupt=True`` decodes every row at open time and leaves out those that fail; they
are listed in ``skipped`` as ``"<shard>#index=<i>"`` and the kept rows are renumbered
``0 .. M-1`` in their ``index`` order (the data set index is then the position among the
kept rows, as for folders). By default a corrupt row raises a :class:`DataError` when it is
loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adasim_ray.data.decode import (
    decode_image,
    find_undecodable,
    native_size_from_headers,
    one_line,
)
from adasim_ray.data.errors import DataError
from adasim_ray.data.layout import existing_root, resolve_split
from adasim_ray.data.source import IMAGENET_MEAN, IMAGENET_STD, ImageSource

log = logging.getLogger(__name__)

METADATA_KEY = b"adasim_ray"
SHARD_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("label", pa.int64(), nullable=True),
    ]
)
_COLUMNS = ("index", "image", "label")


def _read_shard(shard: Path, name: str) -> tuple[pa.Table, list[str] | None]:
    """One shard as a table ``index: int64, image: large_binary, label: int64`` + classes."""
    try:
        schema = pq.read_schema(shard)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{name}: cannot read shard {shard.name} ({one_line(exc)})") from exc
    for column in ("index", "image"):
        if column not in schema.names:
            raise DataError(f"{name}: shard {shard.name} is missing the '{column}' column")
    checks = {
        "index": pa.types.is_integer,
        "image": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
        "label": lambda t: pa.types.is_integer(t) or pa.types.is_null(t),
    }
    for column, ok in checks.items():
        if column in schema.names and not ok(schema.field(column).type):
            raise DataError(
                f"{name}: shard {shard.name} column '{column}' has type {schema.field(column).type}"
            )
    try:
        table = pq.read_table(shard, columns=[c for c in _COLUMNS if c in schema.names])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{name}: cannot read shard {shard.name} ({one_line(exc)})") from exc
    if table.column("index").null_count:
        raise DataError(f"{name}: shard {shard.name} has a null index")
    label = (
        table.column("label").cast(pa.int64())
        if "label" in table.column_names
        else pa.nulls(table.num_rows, pa.int64())
    )
    # large_binary: 64-bit offsets, so one combined column may exceed 2 GB of image bytes.
    table = pa.table(
        {
            "index": table.column("index").cast(pa.int64()),
            "image": table.column("image").cast(pa.large_binary()),
            "label": label,
        }
    )
    meta = (schema.metadata or {}).get(METADATA_KEY)
    classes = None
    if meta is not None:
        try:
            names = json.loads(meta).get("classes")
            classes = None if names is None else [str(c) for c in names]
        except (ValueError, AttributeError, TypeError) as exc:
            raise DataError(
                f"{name}: shard {shard.name} has unreadable '{METADATA_KEY.decode()}' metadata"
            ) from exc
    return table, classes


def _check_indices(
    index: np.ndarray, shard_of: np.ndarray, shards: list[Path], name: str
) -> np.ndarray:
    """Order that sorts ``index``; a DataError unless the indices are exactly ``0 .. N-1``."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    if ordered.size and ordered[0] < 0:
        shard = shards[shard_of[order[0]]].name
        raise DataError(f"{name}: negative index {ordered[0]} in shard {shard}")
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        k = int(dup[0])
        first, second = shards[shard_of[order[k]]].name, shards[shard_of[order[k + 1]]].name
        where = f"shard {first}" if first == second else f"shards {first} and {second}"
        raise DataError(f"{name}: duplicate index {ordered[k]} in {where}")
    gaps = np.flatnonzero(ordered != np.arange(ordered.size))
    if gaps.size:
        raise DataError(
            f"{name}: index {int(gaps[0])} is missing; the indices of a split must be exactly "
            f"0..{ordered.size - 1} (largest found: {ordered[-1]})"
        )
    return order


class ParquetSource(ImageSource):
    """A split of a directory of Parquet shards (module docstring for the format).

    Args:
        path: the directory (``~`` is expanded).
        split: ``"train"`` or ``"test"``.
        skip_corrupt: decode every row now and leave out those that fail.
        spec: the spec string for messages and ``name``; default ``"parquet:<path>"``.

    Attributes:
        shards: the shard files read, sorted by name.

    Examples:
        >>> source = ParquetSource("/data/shards", "train")  # doctest: +SKIP
        >>> source.load(17).shape[-1]  # doctest: +SKIP
        3
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        skip_corrupt: bool = False,
        spec: str | None = None,
    ) -> None:
        spec = spec or f"parquet:{path}"
        self.name = f"{spec}:{split}"
        root = existing_root(spec, path)
        split_dir = resolve_split(root, split, spec)
        self.shards = sorted(p for p in split_dir.glob("*.parquet") if p.is_file())
        if not self.shards:
            raise DataError(f"{self.name}: no *.parquet shards in {split_dir}")

        tables: list[pa.Table] = []
        class_lists: list[list[str]] = []
        for shard in self.shards:
            table, classes = _read_shard(shard, self.name)
            tables.append(table)
            if classes is not None:
                class_lists.append(classes)
        sizes = [t.num_rows for t in tables]
        shard_of = np.repeat(np.arange(len(tables), dtype=np.int32), sizes)
        table = pa.concat_tables(tables)
        if table.num_rows == 0:
            raise DataError(f"{self.name}: the shards in {split_dir} hold no rows")
        index = table.column("index").to_numpy()
        order = _check_indices(index, shard_of, self.shards, self.name)
        table = table.take(pa.array(order)).combine_chunks()
        self._shard_of = shard_of[order]
        self._images = table.column("image").chunk(0)

        if any(c != class_lists[0] for c in class_lists):
            raise DataError(f"{self.name}: the shards disagree on the class names in metadata")
        self.class_names = tuple(class_lists[0]) if class_lists else None
        self.labels = self._labels(table.column("label"))

        if skip_corrupt:
            self._skip_corrupt()
        if self.labels is None:
            self.num_classes = None
        elif self.class_names is not None:
            self.num_classes = len(self.class_names)
            if self.labels.size and int(self.labels.max()) >= self.num_classes:
                raise DataError(
                    f"{self.name}: label {int(self.labels.max())} but the metadata names only "
                    f"{self.num_classes} classes"
                )
        else:
            self.num_classes = int(self.labels.max()) + 1
        self.channels = 3
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.native_size = native_size_from_headers(range(len(self._images)), self._bytes)

    def _labels(self, column: pa.ChunkedArray) -> np.ndarray | None:
        if column.null_count == len(column):
            return None
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{self.name}: label is null for index {first} but set for other rows; "
                "labels must be all set or all null"
            )
        labels = column.to_numpy().astype(np.int64, copy=False)
        if labels.min() < 0:
            k = int(np.argmin(labels))
            raise DataError(f"{self.name}: negative label {labels[k]} at index {k}")
        return labels

    def _skip_corrupt(self) -> None:
        bad = find_undecodable(range(len(self._images)), self._bytes)
        if not bad:
            return
        self.skipped = tuple(f"{self.shards[self._shard_of[k]].name}#index={k}" for k in bad)
        keep = np.setdiff1d(np.arange(len(self._images)), bad)
        if keep.size == 0:
            raise DataError(f"{self.name}: every image is corrupt")
        self._images = self._images.take(pa.array(keep))
        self._shard_of = self._shard_of[keep]
        self.labels = None if self.labels is None else self.labels[keep]
        log.warning(
            "%s: skipped %d corrupt image(s) of %d and renumbered the rest, e.g. %s",
            self.name,
            len(bad),
            len(bad) + keep.size,
            self.skipped[0],
        )

    def _bytes(self, row: int) -> bytes:
        return self._images[row].as_py()

    def encoded(self, index: int) -> bytes:
        return self._bytes(self._check_index(index))

    def where(self, index: int) -> str:
        shard = self.shards[self._shard_of[self._check_index(index)]].name
        return f"{self.name}: shard {shard} row index {index}"

    def __len__(self) -> int:
        return len(self._images)

    def _load(self, index: int) -> np.ndarray:
        return decode_image(self._bytes(index), self.where(index))
