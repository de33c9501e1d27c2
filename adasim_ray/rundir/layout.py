"""Where a run directory is and how its small files are read and written: a local path or a
cloud URI, through pyarrow's file systems; paths joined and split the same way for both; a
file written whole (a temporary name, then a move), JSON without NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from adasim_ray.errors import AdasimError, UserError
from adasim_ray.resources.storage import resolve

CONFIG = "config.yaml"
SUMMARY = "summary.json"


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` (a local directory or a URI) is a run directory: it holds
    ``config.yaml``, which a run writes first, before any Ray work (so even a run that
    failed at start-up, or a sweep trial that never trained, is one and can be resumed)."""
    return file_type(join(str(path), CONFIG)) == pafs.FileType.File


def file_type(uri: str) -> pafs.FileType:
    """What is at ``uri`` (a local path or a URI); NotFound also when storage cannot say."""
    try:
        fs, path = resolve(uri)
        return fs.get_file_info(path).type
    except (OSError, ValueError):
        return pafs.FileType.NotFound


def require_run_dir(
    path: str | Path, what: str, error: type[AdasimError] = UserError
) -> str:
    """``path`` (a local directory, made absolute, or a URI such as s3://bucket/runs/RUN)
    when it is a run directory, else ``error`` in one line that starts with ``what`` (the
    option or command it came from) and says which of the two is wrong: no such directory,
    or a directory without ``config.yaml``.

    Examples:
        >>> require_run_dir("/nowhere", "--resume")
        Traceback (most recent call last):
        ...
        adasim_ray.errors.UserError: --resume: run directory not found: /nowhere
    """
    where = str(path) if "://" in str(path) else str(Path(path).expanduser().resolve())
    if file_type(where) != pafs.FileType.Directory:
        raise error(f"{what}: run directory not found: {path}")
    if not is_run_dir(where):
        raise error(f"{what}: {path} has no {CONFIG}: not a run directory")
    return where.rstrip("/")


def join(base: str, *names: str) -> str:
    return "/".join([str(base).rstrip("/"), *names])


def split(uri: str) -> tuple[str, str]:
    """(parent, last name) of a local path or a URI."""
    parent, _, name = str(uri).rstrip("/").rpartition("/")
    return parent, name


def list_dirs(uri: str, prefix: str) -> list[str]:
    """The sub-directories of ``uri`` whose names start with ``prefix``, as paths or URIs
    like ``uri``, sorted by name; none when ``uri`` does not exist."""
    try:
        fs, path = resolve(uri)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return []
    return sorted(join(uri, i.base_name) for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))


def write_text(uri: str, text: str) -> None:
    """Write a small file whole (temp name, then move: readers never see half of it)."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode())
    fs.move(tmp, path)


def read_text(uri: str) -> str | None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def _clean(value: Any) -> Any:
    """JSON without NaN (as null), so that any JSON reader can read the files."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj))
