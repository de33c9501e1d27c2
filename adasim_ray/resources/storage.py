"""A run's storage, a local path or a cloud URI (through pyarrow's file systems): how it is
opened (:func:`resolve`, its errors told apart in ``resources/store.py``), and that it can be
written, found out at start-up rather than at the first checkpoint: ``adasim-ray check``
probes it, and the pretraining driver also checks that a local disk has room for its
checkpoints."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from adasim_ray.errors import ConfigError
from adasim_ray.resources.store import resolve  # noqa: F401 - where the package opens storage


def probe_storage(uri: str) -> None:
    """Write and delete a probe file under ``uri`` (a local path or s3:// gs:// URI), as the
    run's files are written; a local directory that this created is removed again."""
    fs, path = resolve(uri)
    created = None
    if "://" not in uri:
        first_missing = Path(path)
        while not first_missing.parent.exists() and first_missing.parent != first_missing:
            first_missing = first_missing.parent
        created = None if first_missing.exists() else str(first_missing)
    fs.create_dir(path, recursive=True)
    probe = f"{path.rstrip('/')}/.adasim-check-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(probe) as out:
        out.write(b"adasim-ray storage probe\n")
    fs.delete_file(probe)
    if created is not None:
        fs.delete_dir(created)


def check_storage(run_dir: str, need_bytes: int) -> None:
    """Fail at start, in one line, when the run directory (a local path or a cloud URI) cannot
    be written, or a local disk lacks room for two checkpoints (``need_bytes`` each), rather
    than at the first save. The write test is ``adasim-ray check``'s storage probe."""
    try:
        if "://" not in run_dir:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        probe_storage(run_dir)
    except Exception as err:  # pyarrow raises OSError, ArrowInvalid, ... with the reason
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise ConfigError(f"--output: cannot write the run directory {run_dir} ({reason})"
                          ) from None
    if "://" in run_dir:
        return
    free = shutil.disk_usage(run_dir).free
    if free < 2 * need_bytes:
        raise ConfigError(
            f"--output: {run_dir} has {free / 2**20:.0f} MiB free, two checkpoints need "
            f"{2 * need_bytes / 2**20:.0f} MiB"
        )


def check_staging(need_bytes: int, directory: str | None = None) -> None:
    """Fail at start, in one line, when the temporary directory where checkpoints are staged
    before they go to the run's storage (``TMPDIR``) lacks room for one: the model file, and
    a cache shard's file where an actor stages it for object storage."""
    directory = directory or tempfile.gettempdir()
    free = shutil.disk_usage(directory).free
    if free < need_bytes:
        raise ConfigError(
            f"checkpoint staging: {directory} has {free / 2**20:.0f} MiB free, a checkpoint "
            f"needs {need_bytes / 2**20:.0f} MiB there before it goes to the run directory; "
            "point TMPDIR at a larger disk"
        )
