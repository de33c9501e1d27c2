"""Data sets on any file system pyarrow reaches: a local path or a URI (``s3://``, ``gs://``,
``hdfs://``, ...), with the split layout of :mod:`adasim_ray.data.layout`.

A URI carries its file system's options as pyarrow reads them, e.g.
``s3://bucket/imagenet?region=eu-west-1`` or, for an S3-compatible server,
``s3://bucket/data?endpoint_override=host:9000&scheme=http``; credentials come from the
environment or the instance role, as for any AWS or GCS client.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from adasim_ray.data.decode import one_line
from adasim_ray.data.errors import DataError
from adasim_ray.data.layout import SPLIT_DIRS
from adasim_ray.data.source import SPLITS


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names a file system by its scheme (``s3://...``)."""
    return "://" in str(location)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(file system, path inside it) of a local path (``~`` expanded) or a URI.

    Raises:
        DataError: a URI pyarrow cannot open (unknown scheme, bad options).
    """
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(str(location))
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot open {location} ({one_line(exc)})") from exc


def kind_of(fs: pafs.FileSystem, path: str, spec: str) -> pafs.FileType:
    """The file type at ``path``; a one-line DataError when the storage cannot be asked
    (no such bucket, no credentials, the server is down)."""
    try:
        return fs.get_file_info(path).type
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec}: cannot read {path} ({one_line(exc)})") from exc


def existing_dir(spec: str, location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(file system, path) of ``location``; a DataError naming ``spec`` unless a directory
    (on object storage: a prefix that holds objects)."""
    fs, path = resolve(location)
    found = kind_of(fs, path, spec)
    if found == pafs.FileType.NotFound:
        raise DataError(f"{spec}: no such directory {location}")
    if found != pafs.FileType.Directory:
        raise DataError(f"{spec}: {location} is not a directory")
    return fs, path.rstrip("/")


def split_dir(fs: pafs.FileSystem, root: str, split: str, spec: str) -> str:
    """Directory of ``split`` under ``root`` on ``fs``: the rules (and the messages) of
    :func:`adasim_ray.data.layout.resolve_split`, on any file system."""
    if split not in SPLITS:
        raise DataError(f"{spec}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    present = {
        name: kind_of(fs, f"{root}/{name}", spec) == pafs.FileType.Directory
        for dirs in SPLIT_DIRS.values()
        for name in dirs
    }
    if not any(present.values()):
        if split == "train":
            return root
        raise DataError(
            f"{spec}: {root} is a single split (no train/ or test/ sub-folder), so it has no "
            f"'{split}' split; put the data in {root}/train and {root}/test"
        )
    for name in SPLIT_DIRS[split]:
        if present[name]:
            return f"{root}/{name}"
    wanted = " or ".join(f"{d}/" for d in SPLIT_DIRS[split])
    raise DataError(f"{spec}: {root} has no {wanted} sub-folder for the '{split}' split")


def list_files(fs: pafs.FileSystem, directory: str, suffix: str, spec: str
               ) -> list[pafs.FileInfo]:
    """The files directly in ``directory`` ending in ``suffix``, sorted by name, leaving out
    names that start with ``_`` or ``.`` (side files, as Parquet readers do)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=False))
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec}: cannot list {directory} ({one_line(exc)})") from exc
    return sorted(
        (i for i in infos
         if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
         and not i.base_name.startswith(("_", "."))),
        key=lambda i: i.base_name,
    )
