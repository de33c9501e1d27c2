"""A run a scheduler can requeue: ``adasim-ray pretrain --name X`` killed with SIGKILL in
epoch 3 and run again with the identical command line finishes with each epoch logged once;
a second copy started while the first runs is refused in one line; a finished run says so and
exits 0. On the S3 server (moto on 127.0.0.1), the harder store: the lease's own tests
(tests/rundir) cover a local disk, where the run directory code is the same."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adasim_ray.rundir.layout import file_type, join
from adasim_ray.rundir.lease import LEASE
from adasim_ray.rundir.logs import resumes
from adasim_ray.rundir.metrics import MetricsLog
from tests.train.tiny import set_args, tiny

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
KILL_AT = 5  # global step 5: epoch 3 of 3, 2 steps an epoch (tests/train/tiny.py)


def test_the_same_command_line_continues_a_killed_run(ray_session, s3_server):
    output = s3_server.uri(f"{s3_server.bucket()}/runs")
    command = [sys.executable, "launch.py", "pretrain", "--name", "requeued", "--output",
               output, *set_args(tiny())]
    env = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    run_dir = join(output, "requeued")

    first = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             env=env | {"ADASIM_FAULT": f"kill_driver@{KILL_AT}"})
    deadline = time.time() + 240
    while file_type(join(run_dir, LEASE)).name != "File" and time.time() < deadline:
        assert first.poll() is None, first.stdout.read()[-3000:]
        time.sleep(0.5)
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    refused = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(refused) == 1, second.stderr[-2000:]
    assert "is being run by process" in refused[0]
    out, _ = first.communicate(timeout=600)
    assert first.returncode == -9, out[-3000:]  # the fault killed the driver in epoch 3
    assert out.splitlines()[0].startswith("[adasim] run requeued at ")
    assert "is new: starting it" in out.splitlines()[0]
    assert len(MetricsLog(run_dir).read()) == 2

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    lines = again.stdout.splitlines()
    assert "resuming from its checkpoint of epoch 2 of 3" in lines[0]
    assert "taking over the lease" in again.stdout  # its holder was SIGKILLed
    assert [row["epoch"] for row in MetricsLog(run_dir).read()] == [1, 2, 3]
    assert resumes(run_dir)[-1] == 2
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "finished all 3 epochs" in done.stdout.splitlines()[0]
