"""The run's storage, with its errors told apart: every read and write of a run directory (a
local path or a cloud URI) goes through the file system :func:`resolve` returns, and so do
Ray Train's own checkpoint uploads (``RunConfig(storage_filesystem=...)``).

Two kinds of error matter to a run that lasts days:

- **transient** (a timeout, a 5xx, throttling, a connection reset): retried with exponential
  backoff, within a bounded time per operation (:data:`RETRY_S`). Two layers do it: the AWS
  client's own retry strategy, with more attempts than pyarrow's default 3
  (:data:`SDK_ATTEMPTS`), retries each HTTP request, each part of an upload included; this
  layer retries each whole operation (a listing, opening a file, a move, a delete) when the
  client gave up, for longer. Still failing after :data:`RETRY_S`, the error is raised as
  the fault it is (Ray Train's ``max_failures`` then restarts the run).
- **permanent** (access denied, a bucket that does not exist, no space left, a read-only
  disk): never retried; a :class:`~adasim_ray.errors.StorageError` of one line that names the
  URI and the cause, which ends the run at once (``train/failures.py``). An error of a
  written stream comes as pyarrow raises it; :func:`permanent_error` reads it there.

A missing file is neither: ``FileNotFoundError`` passes through as pyarrow raises it.

Examples:
    >>> classify(OSError("When uploading part ...: AWS Error SLOW_DOWN during UploadPart"))
    ('transient', 'throttled (SLOW_DOWN)')
    >>> classify(OSError(28, "No space left on device"))
    ('permanent', 'no space left on the device')
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from adasim_ray.errors import StorageError

#: Seconds one operation is retried for, backoff included (``ADASIM_STORAGE_RETRY_S``).
RETRY_S = 300.0
#: Attempts of each HTTP request by the S3 client itself (pyarrow's default: 3).
SDK_ATTEMPTS = 6
_FIRST_WAIT_S, _MAX_WAIT_S = 0.5, 20.0
_CHUNK = 8 * 2**20  # bytes a read or write of a copy moves at once

T = TypeVar("T")

# The AWS client's error names (pyarrow: "AWS Error NAME during Operation ..."), GCS's status
# codes, errno values and HTTP statuses, each with the cause a user reads.
_PERMANENT_NAMES = {
    "ACCESS_DENIED": "access denied (HTTP 403)",
    "INVALID_ACCESS_KEY_ID": "the access key is not known (HTTP 403)",
    "SIGNATURE_DOES_NOT_MATCH": "the secret key does not match (HTTP 403)",
    "NO_SUCH_BUCKET": "no such bucket (HTTP 404)",
    "PERMISSION_DENIED": "permission denied",
    "UNAUTHENTICATED": "not authenticated",
}
_TRANSIENT_NAMES = {
    "SLOW_DOWN": "throttled (SLOW_DOWN)",
    "THROTTLING": "throttled",
    "REQUEST_LIMIT_EXCEEDED": "throttled",
    "SERVICE_UNAVAILABLE": "service unavailable (HTTP 503)",
    "INTERNAL_FAILURE": "server error (HTTP 500)",
    "NETWORK_CONNECTION": "connection failed or reset",
    "REQUEST_TIMEOUT": "timed out",
    "UNAVAILABLE": "service unavailable",
    "DEADLINE_EXCEEDED": "timed out",
    "RESOURCE_EXHAUSTED": "throttled",
}
_PERMANENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                     errno.EPIPE, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH}


def classify(err: BaseException) -> tuple[str, str]:
    """(``"transient"``, ``"permanent"`` or ``"other"``, the cause in a few words) of an
    error a file system raised."""
    if isinstance(err, StorageError):
        return "permanent", str(err)
    if isinstance(err, FileNotFoundError):
        return "other", "not found"
    code = getattr(err, "errno", None)
    if code in _PERMANENT_ERRNOS:
        return "permanent", _PERMANENT_ERRNOS[code]
    if code in _TRANSIENT_ERRNOS:
        return "transient", os.strerror(code).lower()
    if isinstance(err, TimeoutError):
        return "transient", "timed out"
    text = str(err)
    if re.search(r"Bucket '[^']*' not found", text):  # pyarrow's own check, before a request
        return "permanent", _PERMANENT_NAMES["NO_SUCH_BUCKET"]
    if "No space left on device" in text:
        return "permanent", _PERMANENT_ERRNOS[errno.ENOSPC]
    for name, cause in _PERMANENT_NAMES.items():
        if re.search(rf"\b{name}\b", text):
            return "permanent", cause
    for name, cause in _TRANSIENT_NAMES.items():
        if re.search(rf"\b{name}\b", text):
            return "transient", cause
    status = re.search(r"HTTP status (\d{3})", text)
    if status:
        value = int(status.group(1))
        if value >= 500 or value in (408, 429):
            return "transient", f"HTTP {value}"
        if value == 403:
            return "permanent", "access denied (HTTP 403)"
    return "other", text.strip().splitlines()[0] if text.strip() else type(err).__name__


def permanent_error(err: BaseException) -> StorageError | None:
    """``err`` as a one-line StorageError when a file system raised it for good (a stream's
    write or close: pyarrow names the bucket and key, read back as the URI), else None."""
    if isinstance(err, StorageError):
        return err
    if not isinstance(err, OSError):
        return None
    kind, cause = classify(err)
    if kind != "permanent":
        return None
    found = re.search(r"key '([^']*)' in bucket '([^']*)'", str(err))
    where = (f"s3://{found.group(2)}/{found.group(1)}" if found
             else getattr(err, "filename", None) or "run storage")
    return StorageError(f"storage: {where}: {cause}")


def retry_seconds() -> float:
    """:data:`RETRY_S`, or ``ADASIM_STORAGE_RETRY_S`` where set (every Ray process of a
    local Ray inherits the driver's environment)."""
    return float(os.environ.get("ADASIM_STORAGE_RETRY_S", RETRY_S))


def guarded(what: str, action: Callable[[], T], *, deadline_s: float | None = None) -> T:
    """``action()``, retried on transient errors with exponential backoff (with jitter) until
    ``deadline_s`` (:func:`retry_seconds`) have passed; a permanent error is a one-line
    StorageError naming ``what`` (the URI) at once, anything else passes through."""
    limit = retry_seconds() if deadline_s is None else deadline_s
    start, wait = time.monotonic(), _FIRST_WAIT_S
    tries = 0
    while True:
        try:
            return action()
        except Exception as err:
            kind, cause = classify(err)
            if isinstance(err, StorageError):
                raise
            if kind == "permanent":
                raise StorageError(f"storage: {what}: {cause}") from None
            tries += 1
            left = limit - (time.monotonic() - start)
            if kind != "transient":
                raise
            if left <= 0:
                raise OSError(f"storage: {what}: {cause}, still after {tries} tries in "
                              f"{time.monotonic() - start:.0f} s") from err
            time.sleep(min(left, wait * random.uniform(0.5, 1.0)))
            wait = min(wait * 2, _MAX_WAIT_S)


class GuardedStore(pafs.FileSystemHandler):
    """A pyarrow file system (wrap it in ``pyarrow.fs.PyFileSystem``) whose every operation
    goes through :func:`guarded`; ``prefix`` (``s3://``, or empty for local paths) makes its
    paths the URIs that messages name. It pickles by its inner file system's options, so that
    the S3 client's retry strategy (which pyarrow's pickling drops) travels with it to the
    Ray processes that use it."""

    def __init__(self, inner: pafs.FileSystem, prefix: str = "") -> None:
        self.inner = _with_retries(inner)
        self.prefix = prefix

    def __reduce__(self) -> tuple[Any, ...]:
        return GuardedStore, (self.inner, self.prefix)

    def uri(self, path: str) -> str:
        return self.prefix + path

    def _do(self, path: str, action: Callable[[], T]) -> T:
        return guarded(self.uri(path), action)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, GuardedStore) and other.prefix == self.prefix
                and other.inner.equals(self.inner))

    def __hash__(self) -> int:
        return hash(self.prefix)

    def equals(self, other: Any) -> bool:
        return self == other

    def get_type_name(self) -> str:
        return f"adasim-guarded+{self.inner.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._do(paths[0] if paths else "", lambda: self.inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._do(selector.base_dir, lambda: self.inner.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._do(path, lambda: self.inner.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._do(path, lambda: self.inner.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._do(path, lambda: self.inner.delete_dir_contents(path,
                                                              missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        self._do("/", lambda: self.inner.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path: str) -> None:
        self._do(path, lambda: self.inner.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._do(dest, lambda: self.inner.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._do(dest, lambda: self.inner.copy_file(src, dest))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self._do(path, lambda: self.inner.open_input_stream(path))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self._do(path, lambda: self.inner.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        # The client's own stream: a stream cannot be replayed; its requests have the
        # client's retries, and whoever writes it replays the whole file (:func:`upload`).
        return self._do(path, lambda: self.inner.open_output_stream(path, metadata=metadata))

    def open_append_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return self._do(path, lambda: self.inner.open_append_stream(path, metadata=metadata))


def upload(local: str | Path, fs: pafs.FileSystem, path: str) -> None:
    """Copy the local file or directory tree ``local`` to ``path`` on ``fs``, one stream per
    file, each closed here so that its error is raised. ``pyarrow.fs.copy_files`` (which Ray
    Train's own checkpoint upload uses) drops the error of a stream's close, where an object
    store refuses an upload's part: measured with pyarrow 26 on the S3 server, a 403 or six
    503s on ``model.pt``'s part and copy_files returned, the file missing. Not retried here:
    callers replay the whole copy (:func:`guarded`)."""
    local = Path(local)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    made: set[str] = set()
    if local.is_dir():
        fs.create_dir(path, recursive=True)
        made.add(path)
    for file in files:
        target = (path if file == local
                  else f"{path.rstrip('/')}/{file.relative_to(local).as_posix()}")
        parent = target.rsplit("/", 1)[0]
        if parent and parent not in made:
            fs.create_dir(parent, recursive=True)
            made.add(parent)
        with open(file, "rb") as source, fs.open_output_stream(target) as out:
            shutil.copyfileobj(source, out, _CHUNK)


def download(uri: str, local: str | Path) -> None:
    """Copy the file ``uri`` (a local path or a URI) to the local file ``local``: its disk's
    room checked first (:func:`require_room`, naming that disk), the copy retried whole on a
    transient error (a read can fail half-way, after the client's own retries) and a
    permanent one a one-line StorageError, as for every operation (:func:`guarded`). A missing
    file is a ``FileNotFoundError``. Each chunk is written unbuffered, so that an error of the
    local disk is raised where it happens, naming it."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)  # guarded, as every operation of the store
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(errno.ENOENT, "not found", uri)
    local = Path(local)
    require_room(local.parent, info.size or 0, f"a copy of {uri}",
                 hint="point TMPDIR at a larger disk")

    def copy() -> None:
        with fs.open_input_stream(path) as source, open(local, "wb", buffering=0) as out:
            while chunk := source.read(_CHUNK):
                view = memoryview(chunk)
                try:
                    while view:
                        view = view[out.write(view):]
                except OSError as err:
                    raise StorageError(f"storage: {local.parent}: {classify(err)[1]} while "
                                       f"copying {uri} there") from None

    guarded(uri, copy)


def _with_retries(fs: pafs.FileSystem) -> pafs.FileSystem:
    """An S3 file system rebuilt with :data:`SDK_ATTEMPTS` attempts per request and
    synchronous writes (Ray copies a checkpoint's files on several threads; pyarrow's
    background writes beneath them can wait on the same thread pool); others as they are."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    options = fs.__reduce__()[1][0] | {"background_writes": False}
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsDefaultS3RetryStrategy(
        max_attempts=SDK_ATTEMPTS))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(file system, path) of a local path or a URI such as s3://bucket/runs, the file system
    guarded (:class:`GuardedStore`). A URI that pyarrow cannot open is a StorageError."""
    if "://" not in uri:
        return (pafs.PyFileSystem(GuardedStore(pafs.LocalFileSystem())),
                str(Path(uri).expanduser().resolve()))
    inner, path = guarded(uri, lambda: pafs.FileSystem.from_uri(uri))
    return pafs.PyFileSystem(GuardedStore(inner, uri.split("://", 1)[0] + "://")), path


def state_bytes(state: Any) -> int:
    """The bytes of the tensors and arrays in ``state`` (nested dicts, lists, tuples): about
    what ``torch.save`` writes of it."""
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    nbytes = getattr(state, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    element, count = getattr(state, "element_size", None), getattr(state, "numel", None)
    return element() * count() if callable(element) and callable(count) else 0


def require_room(directory: str | Path, need: int, what: str, hint: str = "") -> None:
    """A StorageError naming ``directory`` before anything is written there when its disk has
    less than ``need`` bytes free (a write that fills it would fail half-way, after the time
    it took); ``hint`` says what to do."""
    free = shutil.disk_usage(directory).free
    if free < need:
        raise StorageError(
            f"storage: {directory}: no space left for {what} ({free / 2**20:.1f} MiB free, "
            f"{need / 2**20:.1f} MiB needed)" + (f"; {hint}" if hint else ""))
