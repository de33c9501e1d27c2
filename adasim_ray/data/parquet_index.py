"""Where each image of a split of Parquet shards lives: (shard, row group, row) by index.

Two ways to build it, neither reading an image:

* **From the side file** ``_adasim_index.pq`` that ``adasim-ray prepare`` writes beside
  the shards: one row per row group (``shard``, ``row_group``, ``first`` index, ``rows``,
  the group's ``labels``), and in its metadata the shard names and sizes it describes, the
  class names and the images' native size. Opening ImageNet's 1,281 shards is then one
  listing and one small read, on local disk or object storage. A side file whose shard
  names or sizes differ from the listing is stale: it is passed over with a warning.
* **From the shards** (any shards of the format, e.g. written by another tool): the
  footers and the ``index`` and ``label`` columns of every shard, read in threads, and
  every check of the format (types, nulls, duplicates, gaps) made at open.

When every row group holds consecutive indices in row order (what ``prepare`` writes) the
map is a table per row group and nothing is kept per image but the labels; otherwise the
row of every index is kept too (8 bytes an image).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adasim_ray.data.decode import one_line
from adasim_ray.data.errors import DataError

log = logging.getLogger(__name__)

INDEX_FILE = "_adasim_index.pq"
METADATA_KEY = b"adasim_ray"
_INDEX_KEY = b"adasim_ray_index"
_VERSION = 1
_READ_THREADS = 16  # footers and small columns: latency-bound on object storage


@dataclass
class ShardIndex:
    """The map from data set index to (shard, row group, row) of one split.

    Attributes:
        shards: shard file names, sorted; ``sizes`` their sizes in bytes.
        group_shard, group_ordinal, group_rows: per row group, its shard (position in
            ``shards``), its number inside that shard and its row count.
        group_first: per row group, its first index; the groups are sorted by it and hold
            consecutive indices, unless ``row_of`` is set.
        row_of: ``None``, or per index its row in the groups' concatenation (file order).
        labels: per index its label (int64), or None when the shards hold no labels.
        classes: the class names of the shards' metadata, or None.
        native_size: the side of the images when known (square, one size), else None.
        offsets, lengths: per index, the byte range of its image inside its shard, when
            the index file lists them (:func:`add_byte_ranges`); None otherwise.
    """

    shards: list[str]
    sizes: list[int]
    group_shard: np.ndarray
    group_ordinal: np.ndarray
    group_rows: np.ndarray
    group_first: np.ndarray
    row_of: np.ndarray | None
    labels: np.ndarray | None
    classes: list[str] | None
    native_size: int | None = None
    offsets: np.ndarray | None = None
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.group_rows.sum())

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row group, row inside it) of each index in ``ids`` (already in range)."""
        if self.row_of is None:
            group = np.searchsorted(self.group_first, ids, side="right") - 1
            return group, ids - self.group_first[group]
        rows = self.row_of[ids]
        group = np.searchsorted(self.group_first, rows, side="right") - 1
        return group, rows - self.group_first[group]


def _shard_columns(fs: pafs.FileSystem, path: str, name: str
                   ) -> tuple[np.ndarray, pa.ChunkedArray, list[int], list[str] | None]:
    """(index, label column (int64; nulls without labels), rows per row group, classes)
    of one shard, its schema checked."""
    shard = path.rsplit("/", 1)[-1]
    try:
        with fs.open_input_file(path) as handle:
            file = pq.ParquetFile(handle)
            schema = file.schema_arrow
            for column in ("index", "image"):
                if column not in schema.names:
                    raise DataError(f"{name}: shard {shard} is missing the '{column}' column")
            checks = {
                "index": pa.types.is_integer,
                "image": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
                "label": lambda t: pa.types.is_integer(t) or pa.types.is_null(t),
            }
            for column, ok in checks.items():
                if column in schema.names and not ok(schema.field(column).type):
                    raise DataError(f"{name}: shard {shard} column '{column}' has type "
                                    f"{schema.field(column).type}")
            wanted = [c for c in ("index", "label") if c in schema.names]
            table = file.read(columns=wanted)
            rows = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    except DataError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{name}: cannot read shard {shard} ({one_line(exc)})") from exc
    if table.column("index").null_count:
        raise DataError(f"{name}: shard {shard} has a null index")
    index = table.column("index").to_numpy().astype(np.int64, copy=False)
    label = (table.column("label").cast(pa.int64()) if "label" in table.column_names
             else pa.chunked_array([pa.nulls(index.size, pa.int64())]))
    return index, label, rows, classes_of(schema.metadata, shard, name)


def classes_of(metadata: dict | None, shard: str, name: str) -> list[str] | None:
    """The class names in a shard's ``adasim_ray`` metadata, or None."""
    raw = (metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        names = json.loads(raw).get("classes")
    except (ValueError, AttributeError, TypeError) as exc:
        raise DataError(
            f"{name}: shard {shard} has unreadable '{METADATA_KEY.decode()}' metadata"
        ) from exc
    return None if names is None else [str(c) for c in names]


def check_indices(index: np.ndarray, shard_of: np.ndarray, shards: list[str], name: str
                  ) -> np.ndarray:
    """Order that sorts ``index``; a DataError unless the indices are exactly ``0 .. N-1``."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    if ordered.size and ordered[0] < 0:
        shard = shards[shard_of[order[0]]]
        raise DataError(f"{name}: negative index {ordered[0]} in shard {shard}")
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        k = int(dup[0])
        first, second = shards[shard_of[order[k]]], shards[shard_of[order[k + 1]]]
        where = f"shard {first}" if first == second else f"shards {first} and {second}"
        raise DataError(f"{name}: duplicate index {ordered[k]} in {where}")
    gaps = np.flatnonzero(ordered != np.arange(ordered.size))
    if gaps.size:
        raise DataError(
            f"{name}: index {int(gaps[0])} is missing; the indices of a split must be exactly "
            f"0..{ordered.size - 1} (largest found: {ordered[-1]})"
        )
    return order


def labels_of(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray | None:
    """A label column in index order as int64, or None when all null; a DataError when
    only some are null or one is negative."""
    if column.null_count == len(column):
        return None
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{name}: label is null for index {first} but set for other rows; "
                        "labels must be all set or all null")
    labels = column.cast(pa.int64()).to_numpy().astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        k = int(np.argmin(labels))
        raise DataError(f"{name}: negative label {labels[k]} at index {k}")
    return labels


def index_from_shards(fs: pafs.FileSystem, directory: str, infos: list[pafs.FileInfo],
                      name: str) -> ShardIndex:
    """Build the map from the shards themselves (module docstring), checking the format."""
    shards = [i.base_name for i in infos]
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(infos))) as pool:
        parts = list(pool.map(lambda i: _shard_columns(fs, i.path, name), infos))
    index = np.concatenate([p[0] for p in parts])
    if index.size == 0:
        raise DataError(f"{name}: the shards in {directory} hold no rows")
    shard_of = np.repeat(np.arange(len(parts), dtype=np.int32), [p[0].size for p in parts])
    order = check_indices(index, shard_of, shards, name)
    class_lists = [p[3] for p in parts if p[3] is not None]
    if any(c != class_lists[0] for c in class_lists):
        raise DataError(f"{name}: the shards disagree on the class names in metadata")
    label_rows = pa.chunked_array([c for p in parts for c in p[1].chunks], pa.int64())
    labels = labels_of(label_rows.take(pa.array(order)), name)

    rows = np.array([r for p in parts for r in p[2]], dtype=np.int64)
    group_shard = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p[2]) for p in parts])
    group_ordinal = np.concatenate([np.arange(len(p[2]), dtype=np.int32) for p in parts])
    start = np.cumsum(rows) - rows
    # Consecutive indices in row order inside every group: index - first == row.
    group_of_row = np.repeat(np.arange(rows.size), rows)
    contiguous = bool(np.all(index - index[start[group_of_row]] == np.arange(index.size)
                             - start[group_of_row]))
    if contiguous:
        by_first = np.argsort(index[start], kind="stable")
        return ShardIndex(shards, [int(i.size) for i in infos], group_shard[by_first],
                          group_ordinal[by_first], rows[by_first], index[start][by_first],
                          None, labels, class_lists[0] if class_lists else None)
    row_of = order.astype(np.int64)  # order[i] = row (in file order) of index i
    return ShardIndex(shards, [int(i.size) for i in infos], group_shard, group_ordinal, rows,
                      start, row_of, labels, class_lists[0] if class_lists else None)


def read_index_file(fs: pafs.FileSystem, directory: str, infos: list[pafs.FileInfo],
                    name: str) -> ShardIndex | None:
    """The map from ``_adasim_index.pq``, or None when there is none or it does not
    describe these shards (then a warning says so)."""
    path = f"{directory}/{INDEX_FILE}"
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
        meta = json.loads(table.schema.metadata[_INDEX_KEY])
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: %s is unreadable (%s); reading the shards' own index columns",
                    name, INDEX_FILE, one_line(exc))
        return None
    listed = [[i.base_name, int(i.size)] for i in infos]
    if meta.get("version") != _VERSION or meta.get("shards") != listed:
        log.warning("%s: %s describes other shards than those in %s (changed since prepare?); "
                    "reading the shards' own index columns", name, INDEX_FILE, directory)
        return None
    first = table.column("first").to_numpy()
    rows = table.column("rows").to_numpy()
    if first.size == 0 or first[0] != 0 or np.any(first[1:] != (first + rows)[:-1]):
        log.warning("%s: %s has row groups that do not cover 0..N-1; reading the shards' own "
                    "index columns", name, INDEX_FILE)
        return None
    labels = labels_of(table.column("labels").combine_chunks().flatten(), name)
    ranges = {}
    if "offsets" in table.column_names:
        ranges = {key: table.column(key).combine_chunks().flatten().to_numpy()
                  for key in ("offsets", "lengths")}
    return ShardIndex(
        shards=[s for s, _ in listed], sizes=[z for _, z in listed],
        group_shard=table.column("shard").to_numpy().astype(np.int32),
        group_ordinal=table.column("row_group").to_numpy().astype(np.int32),
        group_rows=rows.astype(np.int64), group_first=first.astype(np.int64), row_of=None,
        labels=labels, classes=meta.get("classes"), native_size=meta.get("native_size"),
        **ranges,
    )


def _shard_ranges(fs: pafs.FileSystem, path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(offset, length) of every image of a shard in row order, or None unless each row
    group's image column is one plain, uncompressed data page (``prepare``'s shards).

    In such a page the values are ``[4-byte length][bytes]`` back to back at its end, so
    the ranges follow from the column chunk's end and the images' lengths. Every range is
    checked against the bytes the Parquet reader gives, so a file laid out otherwise gets
    None, never a wrong range."""
    with fs.open_input_file(path) as handle:
        file = pq.ParquetFile(handle)
        column = file.schema_arrow.get_field_index("image")
        offsets, lengths = [], []
        for g in range(file.num_row_groups):
            chunk = file.metadata.row_group(g).column(column)
            if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
                return None
            images = file.read_row_group(g, columns=["image"]).column(0).to_pylist()
            sizes = np.array([len(b) for b in images], dtype=np.int64)
            end = chunk.data_page_offset + chunk.total_compressed_size
            starts = end - int((sizes + 4).sum()) + np.concatenate([[0], np.cumsum(sizes + 4)
                                                                    [:-1]]) + 4
            for start, image in zip(starts.tolist(), images, strict=True):
                if start < 4 or handle.read_at(len(image), start) != image:
                    return None
            offsets.append(starts)
            lengths.append(sizes)
    return np.concatenate(offsets), np.concatenate(lengths).astype(np.int32)


def add_byte_ranges(fs: pafs.FileSystem, infos: list[pafs.FileInfo], index: ShardIndex
                    ) -> bool:
    """Set ``index.offsets`` and ``lengths`` (in index order) when every shard allows them
    (:func:`_shard_ranges`) and the groups hold consecutive indices; return whether set."""
    if index.row_of is not None:
        return False
    ranges = [_shard_ranges(fs, info.path) for info in infos]
    if any(r is None for r in ranges):
        return False
    # Row order of shard s, group g -> index order: the groups are sorted by first index.
    by_shard = [np.split(r[0], np.cumsum(_group_rows(index, s))[:-1]) for s, r in
                enumerate(ranges)]
    by_shard_len = [np.split(r[1], np.cumsum(_group_rows(index, s))[:-1]) for s, r in
                    enumerate(ranges)]
    index.offsets = np.concatenate([by_shard[s][o] for s, o in
                                    zip(index.group_shard, index.group_ordinal, strict=True)])
    index.lengths = np.concatenate([by_shard_len[s][o] for s, o in
                                    zip(index.group_shard, index.group_ordinal, strict=True)])
    return True


def _group_rows(index: ShardIndex, shard: int) -> np.ndarray:
    """Rows of shard ``shard``'s groups in their order inside it."""
    mine = np.flatnonzero(index.group_shard == shard)
    return index.group_rows[mine[np.argsort(index.group_ordinal[mine])]]


def write_index_file(fs: pafs.FileSystem, directory: str, index: ShardIndex) -> bool:
    """Write ``_adasim_index.pq`` for ``index`` into ``directory``; False (nothing
    written) when its row groups do not hold consecutive indices."""
    if index.row_of is not None:
        return False
    bounds = np.concatenate([[0], np.cumsum(index.group_rows)])
    labels = (pa.nulls(len(index), pa.int64()) if index.labels is None
              else pa.array(index.labels, pa.int64()))
    meta = {"version": _VERSION, "shards": [[s, z] for s, z in zip(index.shards, index.sizes,
                                                                      strict=True)],
            "classes": index.classes, "native_size": index.native_size}
    columns = {}
    if index.offsets is not None:
        columns = {"offsets": pa.ListArray.from_arrays(pa.array(bounds, pa.int32()),
                                                        pa.array(index.offsets, pa.int64())),
                   "lengths": pa.ListArray.from_arrays(pa.array(bounds, pa.int32()),
                                                        pa.array(index.lengths, pa.int32()))}
    table = pa.table({
        **columns,
        "shard": pa.array(index.group_shard, pa.int32()),
        "row_group": pa.array(index.group_ordinal, pa.int32()),
        "first": pa.array(index.group_first, pa.int64()),
        "rows": pa.array(index.group_rows, pa.int64()),
        "labels": pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), labels),
    }).replace_schema_metadata({_INDEX_KEY: json.dumps(meta)})
    with fs.open_output_stream(f"{directory}/{INDEX_FILE}") as out:
        pq.write_table(table, out, compression="zstd")
    return True


def default_cache_bytes() -> int:
    """The row-group cache of one reading process: 256 MiB, or 1/64 of the node's memory
    when that is less (a node runs many fetch processes)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return int(min(256 << 20, max(32 << 20, total // 64)))
