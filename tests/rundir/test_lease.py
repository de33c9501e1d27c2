"""One writer per run: the lease of a run directory, on a local disk and on the S3 server
(moto on 127.0.0.1): a second holder refused in one line, a stale or orphaned lease taken
over with a line, renewals, release."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from adasim_ray.rundir.layout import join, read_text, write_text
from adasim_ray.rundir.lease import LEASE, LeaseHeldError, RunLease


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    server = request.getfixturevalue("s3_server")
    return server.uri(f"{server.bucket()}/runs/run")


def test_one_holder_at_a_time_then_release(run_dir):
    first = RunLease.acquire(run_dir, renew_s=3600)
    try:
        with pytest.raises(LeaseHeldError, match=r"is being run by process \d+ on ") as err:
            RunLease.acquire(run_dir, renew_s=3600)
        assert len(str(err.value).splitlines()) == 1
        assert re.search(r"lease renewed \d+ s ago", str(err.value))
        held = json.loads(read_text(join(run_dir, LEASE)))
        assert held["pid"] == first.me.pid and held["host"] == socket.gethostname()
    finally:
        first.release()
    assert read_text(join(run_dir, LEASE)) is None
    RunLease.acquire(run_dir, renew_s=3600).release()  # free again


def test_an_expired_or_orphaned_lease_is_taken_over(run_dir, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "x",
              "renewed": time.time()}
    write_text(join(run_dir, LEASE), json.dumps(orphan))
    lease = RunLease.acquire(run_dir, renew_s=3600)
    assert f"process {orphan['pid']} on this host is gone" in capsys.readouterr().out
    lease.release()
    expired = {"host": "another-host", "pid": 1, "token": "y", "renewed": time.time() - 500}
    write_text(join(run_dir, LEASE), json.dumps(expired))
    lease = RunLease.acquire(run_dir, renew_s=3600, expire_s=120)
    assert "not renewed for 500 s" in capsys.readouterr().out
    lease.release()
    alive = {"host": "another-host", "pid": 1, "token": "z", "renewed": time.time() - 60}
    write_text(join(run_dir, LEASE), json.dumps(alive))
    with pytest.raises(LeaseHeldError, match="process 1 on another-host"):
        RunLease.acquire(run_dir, renew_s=3600, expire_s=120)


def test_renewal_writes_a_fresh_time_and_notices_a_takeover(run_dir):
    lease = RunLease.acquire(run_dir, renew_s=3600)
    before = json.loads(read_text(join(run_dir, LEASE)))["renewed"]
    time.sleep(0.05)
    lease.renew()
    assert json.loads(read_text(join(run_dir, LEASE)))["renewed"] > before
    thief = {"host": "elsewhere", "pid": 7, "token": "t", "renewed": time.time()}
    write_text(join(run_dir, LEASE), json.dumps(thief))
    lease.renew()
    assert lease.lost and "process 7 on elsewhere" in lease.lost
    lease.release()
    assert json.loads(read_text(join(run_dir, LEASE)))["token"] == "t"  # not ours to remove


def test_the_s3_lease_is_a_conditional_create(s3_server, capsys):
    """On S3 the lease is created with If-None-Match (the server refuses a second create),
    not written and read back."""
    from adasim_ray.rundir.lease import _s3_create_if_absent

    uri = s3_server.uri(f"{s3_server.bucket()}/runs/cond/{LEASE}")
    assert _s3_create_if_absent(uri, "{}") is True
    assert _s3_create_if_absent(uri, "{}") is False
    RunLease.acquire(s3_server.uri(f"{s3_server.bucket()}/runs/other"), renew_s=3600).release()
    assert "read back" not in capsys.readouterr().out
