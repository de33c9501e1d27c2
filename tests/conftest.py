"""Shared fixtures: one local Ray for the whole test session (started on first use), and
one S3-compatible server on 127.0.0.1 (moto's server mode) for object-storage tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """A local Ray with 2 CPUs, started once per test session and shut down at its end; after
    the S3 server, so that every Ray process finds it through the environment."""
    import ray

    from adasim_ray.train.run import start_local_ray

    if not ray.is_initialized():
        # The dashboard stays on: Ray Train frees stopped runs' placement groups through it.
        start_local_ray(num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


_AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": ""}


@dataclass
class S3Server:
    """A real S3 API on 127.0.0.1 (moto's server, its own process); any credentials do."""

    endpoint: str  # host:port

    def uri(self, path: str) -> str:
        """``s3://bucket/path`` on this server: the session's environment names it
        (``AWS_ENDPOINT_URL``, as for any S3-compatible store) and its credentials."""
        return f"s3://{path}"

    def uri_with_options(self, path: str) -> str:
        """The same, with the endpoint and credentials in the URI (pyarrow's URI options),
        for a process that does not have the environment."""
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
    """moto's S3 server on a free port of 127.0.0.1 for the session, stopped at its end. The
    environment points the AWS clients of this process and of those started after it (Ray's
    included) at it, with test credentials: no test reaches a real AWS endpoint."""
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
    endpoint = f"127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    os.environ.update(_AWS_ENV, AWS_ENDPOINT_URL=f"http://{endpoint}")
    yield S3Server(endpoint)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=30)
