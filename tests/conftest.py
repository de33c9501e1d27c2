"""Shared fixtures: one local Ray for the whole test session (started on first use), and
one S3-compatible server on 127.0.0.1 (moto's server mode) for object-storage tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once per test session and shut down at its end."""
    import ray

    from adasim_ray.train.run import start_local_ray

    if not ray.is_initialized():
        # The dashboard stays on: Ray Train frees stopped runs' placement groups through it.
        start_local_ray(num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@dataclass
class S3Server:
    """A real S3 API on 127.0.0.1 (moto's server, its own process); any credentials do."""

    endpoint: str  # host:port

    def uri(self, path: str) -> str:
        """``s3://`` URI of ``bucket/path`` on this server, options included, as pyarrow's
        ``FileSystem.from_uri`` reads it (credentials in the URI: no lookup of an instance
        role, which would wait on a metadata endpoint)."""
        return f"s3://test:test@{path}?scheme=http&endpoint_override={self.endpoint}"

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key="test", secret_key="test", scheme="http",
                                 endpoint_override=self.endpoint, allow_bucket_creation=True)

    def bucket(self) -> str:
        """A new empty bucket's name."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def upload(self, local: Path, bucket_path: str) -> None:
        """Copy the tree under ``local`` to ``bucket/path``."""
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), bucket_path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem())


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free port of 127.0.0.1 for the session, stopped at its end."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.1)
    yield S3Server(f"127.0.0.1:{port}")
    server.terminate()
    server.wait(timeout=30)
