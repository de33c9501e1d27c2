"""Ray Train's upload of an epoch's checkpoint, as one operation of the guarded store
(``resources/store.py``): ``ray.train.report(..., checkpoint_upload_fn=upload_checkpoint)``.

Ray's own upload (``pyarrow.fs.copy_files`` into the file system the driver handed it,
``RunConfig(storage_filesystem=...)``) had two gaps, both seen on the S3 server behind the
fault-injecting proxy (``tests/train/test_storage_faults.py``): an error of a stream's close,
where the store refuses a part of ``model.pt``, was dropped (the report went on, the
checkpoint without its model); and a written stream cannot be replayed, so a part throttled
more times in a row than the client's attempts would fail the upload, and Ray Train would
restart the worker group, spending one of ``max_failures`` and redoing the epoch. Here each
file's error is raised (:func:`~adasim_ray.resources.store.upload`) and the whole upload is
retried from the local copy, with the store's backoff and time bound; a permanent error
names the file it met, at once.
"""

from __future__ import annotations

from typing import Any

import pyarrow.fs as pafs
import ray.train

from adasim_ray.resources.store import GuardedStore, guarded, permanent_error, upload


def upload_checkpoint(checkpoint: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
    """Ray Train's upload of ``checkpoint`` (a local directory) into the run as ``name``,
    retried whole on transient errors; a permanent one is a one-line StorageError naming the
    file's URI."""
    storage = ray.train.get_context().get_storage()
    fs, path = storage.storage_filesystem, storage.build_checkpoint_path_from_name(name)

    def attempt() -> None:
        try:
            upload(checkpoint.path, fs, path)
        except OSError as err:  # pyarrow names the key it was writing: that file's URI
            refused = permanent_error(err)
            if refused is None:
                raise
            raise refused from None

    guarded(_uri(fs, path), attempt)
    return ray.train.Checkpoint(path=path, filesystem=fs)


def _uri(fs: Any, path: str) -> str:
    """``path`` on ``fs`` as the URI that messages name (the guarded store's prefix)."""
    handler = getattr(fs, "handler", None) if isinstance(fs, pafs.PyFileSystem) else None
    return handler.uri(path) if isinstance(handler, GuardedStore) else path
