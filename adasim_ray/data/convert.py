"""Convert an image folder into Parquet shards (``adasim-ray prepare``).

Millions of small files are slow to list and to read on shared file systems; a few hundred
shards are not. The shards follow :mod:`adasim_ray.data.parquet`, keep the original encoded
bytes (no re-encoding, no quality loss) and the folder's indices, so
``open_source("parquet:OUT", split)`` yields the same images and labels, index for index, as
``open_source("folder:IN", split)``.

Every image is decoded once during the conversion (in threads), so a corrupt file is found
here rather than in the middle of a training epoch: it raises a :class:`DataError` naming
it, or with ``skip_corrupt=True`` it is left out and listed in the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adasim_ray.data.decode import decode_image, find_undecodable, one_line
from adasim_ray.data.errors import DataError
from adasim_ray.data.files import list_files, resolve
from adasim_ray.data.folder import FolderSource
from adasim_ray.data.layout import existing_root, split_layout
from adasim_ray.data.parquet import METADATA_KEY, ROWS_PER_GROUP, SHARD_SCHEMA
from adasim_ray.data.parquet_index import add_byte_ranges, index_from_shards, write_index_file

DEFAULT_ROWS_PER_SHARD = 1000  # ImageNet JPEGs average ~110 kB: shards of ~110 MB
_SCHEMA = SHARD_SCHEMA.append(pa.field("path", pa.string(), nullable=False))
_PAGE_BYTES = 1 << 30  # no page break inside a row group's images
# The images are already compressed (PNG/JPEG); compressing them again costs time for ~0 gain.
_COMPRESSION = {"index": "zstd", "image": "none", "label": "zstd", "path": "zstd"}


def _check_decodable(source: FolderSource) -> None:
    bad = find_undecodable(source.files, Path)
    if bad:
        first = source.files[bad[0]]
        try:
            decode_image(Path(first), f"{source.name}: {first}")
        except DataError as exc:
            raise DataError(
                f"{exc}; {len(bad)} corrupt file(s) in this split: fix or remove them, "
                "or convert with skip_corrupt=True"
            ) from exc


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)})") from exc


def _write_split(source: FolderSource, out: Path, rows_per_shard: int, rows_per_group: int,
                 meta: bytes) -> int:
    """Write ``source`` as ``part-NNNNN.parquet`` shards under ``out``; return the count."""
    out.mkdir(parents=True, exist_ok=True)
    schema = _SCHEMA.with_metadata({METADATA_KEY: meta})
    n = len(source)
    shards = 0
    for start in range(0, n, rows_per_shard):
        stop = min(start + rows_per_shard, n)
        files = source.files[start:stop]
        labels = (
            pa.array(source.labels[start:stop], pa.int64())
            if source.labels is not None
            else pa.nulls(stop - start, pa.int64())
        )
        table = pa.table(
            {
                "index": pa.array(np.arange(start, stop, dtype=np.int64)),
                "image": pa.array([_read(f) for f in files], pa.binary()),
                "label": labels,
                "path": pa.array([os.path.relpath(f, source.root) for f in files]),
            },
            schema=schema,
        )
        # The image column plain, uncompressed, one data page per group: every image is then
        # one byte range of the file, which the index file lists (one read per image).
        pq.write_table(table, out / f"part-{shards:05d}.parquet", compression=_COMPRESSION,
                       row_group_size=rows_per_group, use_dictionary=["label", "path"],
                       data_page_size=_PAGE_BYTES)
        shards += 1
    return shards


def write_index(directory: str | Path, spec: str, native_size: int | None = None) -> int:
    """Write ``_adasim_index.pq`` beside the shards in ``directory`` (a local path or
    URI), read from the shards' own columns: a split then opens from one small file. Returns
    the number of row groups it lists (0: the groups do not hold consecutive indices, and
    no file is written)."""
    fs, path = resolve(directory)
    infos = list_files(fs, path, ".parquet", spec)
    index = index_from_shards(fs, path, infos, spec)
    index.native_size = native_size
    add_byte_ranges(fs, infos, index)
    return index.group_rows.size if write_index_file(fs, path, index) else 0


def convert_folder_to_parquet(
    folder: str | Path,
    out_dir: str | Path,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    *,
    skip_corrupt: bool = False,
    rows_per_group: int = ROWS_PER_GROUP,
    labels: bool = True,
) -> dict[str, Any]:
    """Write the splits of an image folder as Parquet shards.

    A split layout (``train/``, ``test/`` or ``val/``) becomes ``out_dir/train`` and
    ``out_dir/test`` (``val/`` is written as ``test/``); a single-split folder becomes
    shards directly in ``out_dir``. The output appears atomically: it is built in a
    temporary sibling folder and renamed at the end, so a failed run leaves nothing behind.
    Each split also gets ``_adasim_index.pq`` (:mod:`adasim_ray.data.parquet_index`),
    so that it opens without reading the shards.

    Args:
        folder: the image folder (a ``"folder:"`` prefix is accepted).
        out_dir: where to write; must not exist or be an empty directory.
        rows_per_shard: images per shard file.
        rows_per_group: images per row group, the unit of a random read
            (:data:`~adasim_ray.data.parquet.ROWS_PER_GROUP`).
        skip_corrupt: leave out images that do not decode instead of failing.
        labels: False: the sub-folders are not classes (every image below a split is one
            unlabelled image; the shards' ``label`` column is null), as ``data_labels:
            none``. A folder of loose images is unlabelled either way.

    Returns:
        ``{"source", "out_dir", "classes", "splits": {split: {"images", "shards",
        "skipped"}}, "shards_written"}``.

    Raises:
        DataError: bad folder, non-empty ``out_dir``, bad ``rows_per_shard`` or
            ``rows_per_group``, or a corrupt
            image without ``skip_corrupt``.

    Examples:
        >>> summary = convert_folder_to_parquet(
        ...     "/data/imagenet", "/data/imagenet-pq"
        ... )  # doctest: +SKIP
        >>> summary["splits"]["train"]["images"]  # doctest: +SKIP
        1281167
    """
    folder_str = str(folder)
    if folder_str.startswith("folder:"):
        folder_str = folder_str[len("folder:") :]
    spec = f"folder:{folder_str}"
    if type(rows_per_shard) is not int or rows_per_shard < 1:  # bool is an int subclass
        raise DataError(
            f"convert {spec}: rows_per_shard must be an integer >= 1, got {rows_per_shard!r}"
        )
    if type(rows_per_group) is not int or rows_per_group < 1:
        raise DataError(
            f"convert {spec}: rows_per_group must be an integer >= 1, got {rows_per_group!r}"
        )
    root = existing_root(spec, folder_str)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"convert {spec}: output {out} exists and is not an empty directory")
    if out == root or root in out.parents:
        raise DataError(f"convert {spec}: output {out} must not be inside the image folder")

    layout = split_layout(root)
    single = layout == {"train": root}
    # Open (and check) every split before writing anything.
    sources = {
        split: FolderSource(root, split, skip_corrupt=skip_corrupt, spec=spec, labels=labels)
        for split in layout
    }
    if not skip_corrupt:
        for source in sources.values():
            _check_decodable(source)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    summary: dict[str, Any] = {"source": str(root), "out_dir": str(out), "splits": {}}
    try:
        for split, source in sources.items():
            meta: dict[str, Any] = {"split": split, "source": str(root)}
            if source.class_names is not None:
                meta["classes"] = list(source.class_names)
            split_out = tmp if single else tmp / split
            shards = _write_split(source, split_out, rows_per_shard, rows_per_group,
                                  json.dumps(meta).encode())
            write_index(split_out, spec, source.native_size)
            summary["splits"][split] = {
                "images": len(source),
                "shards": shards,
                "skipped": list(source.skipped),
            }
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Every split of a folder shares one class list (the union), so any split's will do.
    classes = next(iter(sources.values())).class_names
    summary["classes"] = None if classes is None else list(classes)
    summary["shards_written"] = sum(s["shards"] for s in summary["splits"].values())
    return summary
