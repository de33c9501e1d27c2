"""One writer per run: the driver of a run holds ``RUN_DIR/lease.json`` for as long as it runs,
renewed as it goes, so that a second driver on the same run (a requeued job whose first copy
is still alive, the same command typed twice) stops in one line instead of writing a second
trajectory into the same files.

The lease names its holder (host, process, a random token) and when it was last renewed. A
lease not renewed within ``expire_s`` (120 s), or held by a process of this host that no longer
exists, is taken over at once, with a line saying so.

How the lease is taken, by storage:

- **local disk**: an exclusive create (``O_CREAT | O_EXCL``): of two drivers, one wins;
- **S3** (and S3-compatible stores): a conditional create (``If-None-Match: *``) through
  boto3 when it is installed: the store lets one writer create the object;
- **elsewhere** (GCS through pyarrow, or S3 without boto3): the holder writes its token, waits
  a moment and reads it back; the last writer wins, so two drivers starting within that moment
  could both believe they hold it (a weaker guarantee, stated in the line they print).

A stale lease is taken over by deleting it and taking it as above, so two drivers that both
find it stale still race for one create.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from adasim_ray.errors import UserError
from adasim_ray.resources.storage import resolve
from adasim_ray.rundir.layout import join, read_text, write_text

__all__ = ["LEASE", "LeaseHeldError", "RunLease"]

LEASE = "lease.json"
RENEW_S = 30.0
EXPIRE_S = 120.0
#: How long a token written where no conditional create exists waits before it is read back.
SETTLE_S = 1.0


class LeaseHeldError(UserError):
    """Another driver holds the run (one line: who, where, when it last renewed)."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str
    renewed: float

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        if not text:
            return None
        try:
            raw = json.loads(text)
            return cls(str(raw["host"]), int(raw["pid"]), str(raw["token"]), float(raw["renewed"]))
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: treated as no lease

    def text(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "token": self.token,
                           "renewed": self.renewed})

    def stale(self, now: float, expire_s: float) -> str | None:
        """Why this lease may be taken over, or None while it holds."""
        if now - self.renewed > expire_s:
            return f"not renewed for {now - self.renewed:.0f} s"
        if self.host == socket.gethostname() and not _alive(self.pid):
            return f"its process {self.pid} on this host is gone"
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLease:
    """The lease of one run directory (a local path or a URI).

    Examples:
        >>> lease = RunLease.acquire("/tmp/runs/r1")  # doctest: +SKIP
        >>> ...                                        # doctest: +SKIP
        >>> lease.release()                            # doctest: +SKIP
    """

    def __init__(self, run_dir: str, *, renew_s: float = RENEW_S,
                 expire_s: float = EXPIRE_S) -> None:
        self.run_dir, self.uri = run_dir, join(run_dir, LEASE)
        self.renew_s, self.expire_s = renew_s, expire_s
        self.me = Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time())
        self.lost: str | None = None  # why the lease was lost while held, if it was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, run_dir: str, **kwargs: Any) -> RunLease:
        """Take the run's lease (module docstring) and start renewing it.

        Raises:
            LeaseHeldError: a live holder has it, named in one line.
        """
        lease = cls(run_dir, **kwargs)
        lease._take()
        lease._thread = threading.Thread(target=lease._renew_loop, name="adasim-lease",
                                         daemon=True)
        lease._thread.start()
        return lease

    # -- taking it --------------------------------------------------------------------------
    def _take(self) -> None:
        for _ in range(3):
            held = Holder.parse(read_text(self.uri))
            if held is not None and held.token != self.me.token:
                why = held.stale(time.time(), self.expire_s)
                if why is None:
                    raise LeaseHeldError(
                        f"{self.run_dir} is being run by process {held.pid} on {held.host} "
                        f"(lease renewed {time.time() - held.renewed:.0f} s ago); one driver "
                        f"per run: stop that one, or wait {self.expire_s:.0f} s after it dies")
                print(f"[adasim] taking over the lease of {self.run_dir} from process "
                      f"{held.pid} on {held.host}: {why}", flush=True)
                self._delete()
            if self._create():
                return
        raise LeaseHeldError(f"{self.run_dir}: another driver took the run's lease at the same "
                             "moment; one driver per run")

    def _create(self) -> bool:
        """Create the lease file if absent; whether this driver now holds it."""
        text = self.me.text()
        if "://" not in self.uri:
            os.makedirs(os.path.dirname(self.uri), exist_ok=True)
            try:
                fd = os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as out:
                out.write(text)
            return True
        created = _s3_create_if_absent(self.uri, text)
        if created is not None:
            return created
        # No conditional create here: write, let a concurrent writer land, read back.
        write_text(self.uri, text)
        time.sleep(SETTLE_S)
        held = Holder.parse(read_text(self.uri))
        if held is not None and held.token == self.me.token:
            print(f"[adasim] lease of {self.run_dir}: written and read back (this store has no "
                  "conditional create: two drivers starting within a second could both run)",
                  flush=True)
            return True
        return False

    def _delete(self) -> None:
        fs, path = resolve(self.uri)
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            if "not found" not in str(err).lower() and "nosuchkey" not in str(err).lower():
                raise

    # -- holding it -------------------------------------------------------------------------
    def renew(self) -> None:
        """Write a fresh ``renewed`` time, unless another driver has taken the lease over
        (then ``lost`` says so, and the lease is not written)."""
        held = Holder.parse(read_text(self.uri))
        if held is None or held.token != self.me.token:
            self.lost = (f"the lease of {self.run_dir} was taken over by "
                         + ("nobody" if held is None else f"process {held.pid} on {held.host}"))
            return
        self.me = Holder(self.me.host, self.me.pid, self.me.token, time.time())
        write_text(self.uri, self.me.text())

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except Exception as err:  # noqa: BLE001 - a storage hiccup: try again next time
                print(f"[adasim] could not renew the lease of {self.run_dir}: {err}",
                      flush=True)
            if self.lost:
                print(f"[adasim] {self.lost}", flush=True)
                return

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            held = Holder.parse(read_text(self.uri))
            if held is not None and held.token == self.me.token:
                self._delete()
        except Exception:  # noqa: BLE001 - it expires by itself
            pass


def _s3_create_if_absent(uri: str, text: str) -> bool | None:
    """A conditional create (``If-None-Match: *``) of ``uri`` on S3 with boto3: True when it
    was created, False when it exists; None where this is not S3 or boto3 is missing."""
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        return None
    try:
        import boto3
        from botocore.exceptions import ClientError
    except ImportError:
        return None
    options = parse_qs(parts.query)
    endpoint = options.get("endpoint_override", [None])[0]
    if endpoint is not None and "://" not in endpoint:
        endpoint = f"{options.get('scheme', ['https'])[0]}://{endpoint}"
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    credentials = {}
    if parts.username:
        credentials = {"aws_access_key_id": parts.username,
                       "aws_secret_access_key": parts.password or ""}
    client = boto3.client("s3", endpoint_url=endpoint, **credentials)
    bucket = parts.hostname or ""
    key = parts.path.lstrip("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=text.encode(), IfNoneMatch="*")
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False
        raise
    return True
