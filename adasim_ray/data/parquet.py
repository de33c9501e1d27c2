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

A split opens from an index of where each image lives (:mod:`.parquet_index`: the side file
``_adasim_index.pq`` that ``adasim-ray prepare`` writes, or the shards' own ``index`` and
``label`` columns), never from the images: in seconds at any N, on local disk or object
storage (``parquet:s3://bucket/imagenet``, any URI of :mod:`adasim_ray.data.files`).
:meth:`ParquetSource.load_many` reads the row groups its indices fall in, each once, through
a cache of row groups bounded in bytes (``cache_bytes``; default
:func:`~adasim_ray.data.parquet_index.default_cache_bytes`); nothing of the images is held
in proportion to N. Random access reads a whole row group per image, so shards meant for
it have small row groups (``prepare`` writes :data:`ROWS_PER_GROUP` images a group).

``skip_corrupt=True`` decodes every row at open time and leaves out those that fail; they
are listed in ``skipped`` as ``"<shard>#index=<i>"`` and the kept rows are renumbered
``0 .. M-1`` in their ``index`` order (the data set index is then the position among the
kept rows, as for folders). By default a corrupt row raises a :class:`DataError` when it is
loaded.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adasim_ray.data.decode import (
    decode_image,
    find_undecodable,
    native_size_from_headers,
    one_line,
)
from adasim_ray.data.errors import DataError
from adasim_ray.data.files import existing_dir, list_files, split_dir
from adasim_ray.data.layout import ROWS_PER_GROUP
from adasim_ray.data.parquet_index import (
    METADATA_KEY,
    ShardIndex,
    default_cache_bytes,
    index_from_shards,
    read_index_file,
)
from adasim_ray.data.source import IMAGENET_MEAN, IMAGENET_STD, ImageSource

log = logging.getLogger(__name__)

__all__ = ["METADATA_KEY", "ROWS_PER_GROUP", "SHARD_SCHEMA", "ParquetSource"]

SHARD_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("label", pa.int64(), nullable=True),
    ]
)
_OPEN_SHARDS = 32  # open shard files kept per process (each holds its footer)
_HEADER_SAMPLE = 32  # images whose headers give the native size when no index file says
_READ_THREADS = 8
_LARGE_GROUP = 64  # images per row group above which opening warns


class ParquetSource(ImageSource):
    """A split of a directory of Parquet shards (module docstring for the format).

    Args:
        path: the directory (``~`` is expanded) or a URI (``s3://bucket/imagenet``).
        split: ``"train"`` or ``"test"``.
        skip_corrupt: decode every row now and leave out those that fail.
        spec: the spec string for messages and ``name``; default ``"parquet:<path>"``.
        cache_bytes: the row-group cache's bound; None = ``default_cache_bytes()``.
        byte_ranges: read an image by its byte range where the index file lists them
            (False: a row group at a time, as for other shards; for measurements).

    Attributes:
        shards: the shard files read, sorted by name.
        indexed: whether the split opened from its index file.
        reads: row groups or byte ranges read from storage so far.

    Examples:
        >>> source = ParquetSource("/data/shards", "train")  # doctest: +SKIP
        >>> source.load(17).shape[-1]  # doctest: +SKIP
        3
    """

    encoded_images = True

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        skip_corrupt: bool = False,
        spec: str | None = None,
        cache_bytes: int | None = None,
        byte_ranges: bool = True,
    ) -> None:
        spec = spec or f"parquet:{path}"
        self.name = f"{spec}:{split}"
        self._fs, root = existing_dir(spec, path)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._dir = split_dir(self._fs, root, split, spec)
        infos = list_files(self._fs, self._dir, ".parquet", spec)
        if not infos:
            raise DataError(f"{self.name}: no *.parquet shards in {self._dir}")
        self._paths = [i.path for i in infos]
        self.shards = [Path(i.base_name) for i in infos]
        index = read_index_file(self._fs, self._dir, infos, self.name)
        self.indexed = index is not None
        if index is None:
            index = index_from_shards(self._fs, self._dir, infos, self.name)
        if not byte_ranges:
            index.offsets = index.lengths = None
        self._index: ShardIndex = index
        per_group = len(index) / max(index.group_rows.size, 1)
        if per_group > _LARGE_GROUP:
            log.warning("%s: row groups of %.0f images on average; every random read takes a "
                        "whole group, so the partner fetch reads ~%.0fx the bytes it uses: "
                        "adasim-ray prepare writes groups of %d", self.name, per_group,
                        per_group, ROWS_PER_GROUP)
        self.cache_bytes = default_cache_bytes() if cache_bytes is None else int(cache_bytes)
        self._lock = threading.Lock()
        self._reset_caches()
        self._keep: np.ndarray | None = None  # position -> index, after skip_corrupt
        self.class_names = None if index.classes is None else tuple(index.classes)
        self.labels = index.labels
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
        self.native_size = (index.native_size if self.indexed else
                            native_size_from_headers(range(len(self)), self.encoded,
                                                     _HEADER_SAMPLE))

    # -- the row-group cache ---------------------------------------------------------------

    def _reset_caches(self) -> None:
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._handles: OrderedDict[int, pa.NativeFile] = OrderedDict()
        self._groups: OrderedDict[int, pa.Array] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None  # reads groups from object storage
        self._cached = 0
        self.reads = 0  # row groups or byte ranges read from storage

    @property
    def byte_ranges(self) -> bool:
        """Whether images are read one byte range each (shards from ``prepare``), rather
        than a row group at a time."""
        return self._index.offsets is not None

    @property
    def cached_bytes(self) -> int:
        """Bytes of images in this process's row-group cache (at most ``cache_bytes``, or
        one group when a group is larger)."""
        return self._cached

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_files", "_handles", "_groups", "_lock", "_pool"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._reset_caches()

    def _open_shard(self, cache: OrderedDict, shard: int, opener: Any) -> Any:
        """``opener(path)`` of a shard, kept in ``cache`` (LRU, at most ``_OPEN_SHARDS``)."""
        with self._lock:
            found = cache.get(shard)
            if found is not None:
                cache.move_to_end(shard)
                return found
        try:
            opened = opener(self._paths[shard])
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.name}: cannot read shard {self.shards[shard].name} "
                            f"({one_line(exc)})") from exc
        with self._lock:
            cache[shard] = opened
            while len(cache) > _OPEN_SHARDS:
                old = cache.popitem(last=False)[1]
                if isinstance(old, pa.NativeFile):
                    old.close()
        return opened

    def _file(self, shard: int) -> pq.ParquetFile:
        # Local shards are read as asked (not memory-mapped: mapped pages would count in the
        # process's memory); on object storage a column chunk is one ranged request.
        return self._open_shard(self._files, shard, lambda path: pq.ParquetFile(
            self._fs.open_input_file(path), pre_buffer=not self._local))

    def _group(self, g: int) -> pa.Array:
        """The images of row group ``g`` in row order (read once, then from the cache)."""
        with self._lock:
            images = self._groups.get(g)
            if images is not None:
                self._groups.move_to_end(g)
                return images
        index = self._index
        shard, ordinal = int(index.group_shard[g]), int(index.group_ordinal[g])
        name = self.shards[shard].name
        try:
            # One thread: the groups of a batch are read in parallel one level up.
            table = self._file(shard).read_row_group(ordinal, columns=["image"],
                                                     use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.name}: cannot read shard {name} row group {ordinal} "
                            f"({one_line(exc)})") from exc
        if table.num_rows != index.group_rows[g]:
            raise DataError(f"{self.name}: shard {name} row group {ordinal} holds "
                            f"{table.num_rows} rows, its index says {index.group_rows[g]}; "
                            "run adasim-ray prepare again")
        images = table.column("image").combine_chunks()
        with self._lock:
            self.reads += 1
            if g not in self._groups:
                self._groups[g] = images
                self._cached += images.nbytes
            while self._cached > self.cache_bytes and len(self._groups) > 1:
                _, old = self._groups.popitem(last=False)
                self._cached -= old.nbytes
        return images

    def _rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = indices if self._keep is None else self._keep[indices]
        return self._index.locate(ids)

    def _handle(self, shard: int) -> pa.NativeFile:
        return self._open_shard(self._handles, shard, self._fs.open_input_file)

    def _ranges(self, ids: np.ndarray) -> list[bytes]:
        """The images at ``ids`` (data set indices) by their byte ranges: one read each."""
        index = self._index
        groups, _ = index.locate(ids)
        shards = index.group_shard[groups]
        offsets, lengths = index.offsets[ids], index.lengths[ids]

        def read(k: int) -> bytes:
            shard = int(shards[k])
            try:
                data = self._handle(shard).read_at(int(lengths[k]), int(offsets[k]))
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{self.name}: cannot read shard {self.shards[shard].name} "
                                f"({one_line(exc)})") from exc
            if len(data) != lengths[k]:
                raise DataError(f"{self.name}: shard {self.shards[shard].name} is shorter than "
                                "its index file says; run adasim-ray prepare again")
            return data

        with self._lock:
            self.reads += ids.size
        if self._local or ids.size == 1:
            return [read(k) for k in range(ids.size)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_READ_THREADS)
        return list(self._pool.map(read, range(ids.size)))

    def encoded_many(self, indices: Sequence[int] | np.ndarray) -> list[bytes]:
        """The encoded bytes of the images at ``indices``, in that order. Shards from
        ``prepare`` are read one byte range an image (the index file lists them); others a
        row group at a time, each group once (in threads on object storage, for its
        latency), through the row-group cache."""
        idx = self._check_indices(indices)
        if self._index.offsets is not None:
            return self._ranges(idx if self._keep is None else self._keep[idx])
        groups, rows = self._rows(idx)
        out: list[bytes] = [b""] * idx.size
        wanted = np.unique(groups)

        def fill(g: int) -> None:
            images = self._group(int(g))
            for k in np.flatnonzero(groups == g):
                out[k] = images[int(rows[k])].as_py()

        if wanted.size == 1 or self._local:
            for g in wanted:
                fill(g)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=_READ_THREADS)
            list(self._pool.map(fill, wanted))
        return out

    # -- the ImageSource contract ----------------------------------------------------------

    def encoded(self, index: int) -> bytes:
        return self.encoded_many([self._check_index(index)])[0]

    def load_many(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        idx = self._check_indices(indices)
        return [decode_image(data, self.where(int(i)))
                for i, data in zip(idx.tolist(), self.encoded_many(idx), strict=True)]

    def identity(self, index: int) -> str:
        index = self._check_index(index)
        length = (len(self.encoded(index)) if self._index.lengths is None else
                  int(self._index.lengths[index if self._keep is None else self._keep[index]]))
        return f"{self._shard_name(index)}:{length}"

    def where(self, index: int) -> str:
        return f"{self.name}: shard {self._shard_name(self._check_index(index))} row index {index}"

    def location(self, index: int) -> dict[str, str | int]:
        group, offset = self._rows(np.array([self._check_index(index)]))
        g, index_ = int(group[0]), self._index
        shard = index_.group_shard[g]
        earlier = (index_.group_shard == shard) & (index_.group_ordinal < index_.group_ordinal[g])
        return {"shard": self.shards[int(shard)].name,
                "row": int(index_.group_rows[earlier].sum()) + int(offset[0])}

    def _shard_name(self, index: int) -> str:
        group, _ = self._rows(np.array([index]))
        return self.shards[self._index.group_shard[group[0]]].name

    def _skip_corrupt(self) -> None:
        bad = find_undecodable(range(len(self)), self.encoded)
        if not bad:
            return
        self.skipped = tuple(f"{self._shard_name(k)}#index={k}" for k in bad)
        keep = np.setdiff1d(np.arange(len(self)), bad)
        if keep.size == 0:
            raise DataError(f"{self.name}: every image is corrupt")
        self._keep = keep
        self.labels = None if self.labels is None else self.labels[keep]
        log.warning(
            "%s: skipped %d corrupt image(s) of %d and renumbered the rest, e.g. %s",
            self.name,
            len(bad),
            len(bad) + keep.size,
            self.skipped[0],
        )

    def __len__(self) -> int:
        return len(self._index) if self._keep is None else int(self._keep.size)

    def _load(self, index: int) -> np.ndarray:
        return decode_image(self.encoded(index), self.where(index))
