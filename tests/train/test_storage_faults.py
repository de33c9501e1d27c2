"""Storage faults in a real run (local Ray, one Train worker) whose run directory is on the S3
server, reached by Ray Train's checkpoint uploads through the fault-injecting proxy
(``tests/s3_faults.py``; the driver hands Train its file system, ``RunConfig(storage_filesystem
=...)``, so the uploads go where the driver's endpoint points).

One run of two epochs. Ray uploads ``model.pt`` of a checkpoint as a multipart upload
(``POST ?uploads``, ``PUT ?partNumber=1&uploadId=...``, ``POST ?uploadId=...``), so the faults
target the part's PUT: epoch 1's is throttled more times in a row than the S3 client attempts
a request, which the upload's retry as a whole (``train/upload.py``) outlasts, at no restart;
epoch 2's is refused (403), which ends the run at once, in one line naming the URI, the cause
and the resume command, the refused request sent once and ``max_failures`` unspent."""

from __future__ import annotations

import pytest

from adasim_ray.config import load_config
from adasim_ray.errors import RunStoppedError, StorageStoppedError
from adasim_ray.resources.store import SDK_ATTEMPTS
from adasim_ray.rundir.checkpoint import latest_checkpoint, read_meta
from adasim_ray.rundir.logs import resumes
from adasim_ray.rundir.metrics import MetricsLog
from tests.s3_faults import FaultProxy
from tests.train.tiny import tiny

pytestmark = pytest.mark.ray

RUN = tiny("limit_images=64", "batch_size=32", "epochs=2", "dino.out_dim=64",
           "dino.hidden_dim=32", "dino.bottleneck_dim=16")
THROTTLED = SDK_ATTEMPTS + 2  # more than one upload's client attempts of the part


def test_a_throttled_upload_costs_no_restart_a_refused_one_ends_the_run(
        ray_session, s3_server, monkeypatch):
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, RUN)
    assert cfg.ray.max_failures > 0  # a restart would be allowed: none may happen
    proxy = FaultProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{proxy.endpoint}")
    bucket = s3_server.bucket()
    part = rf"^/{bucket}/runs/[^/]+/checkpoint_[^/]+/model\.pt\?partNumber=1&uploadId="
    # rules are asked in order: epoch 1's part is throttled THROTTLED times, its next try
    # goes through (the second rule lets one pass), epoch 2's is refused, once if at all
    proxy.fail("PUT", part, status=503, code="SlowDown", times=THROTTLED)
    proxy.fail("PUT", part, status=403, code="AccessDenied", times=3, skip=1)
    try:
        with pytest.raises(StorageStoppedError) as caught:
            pretrain(cfg, s3_server.uri(f"{bucket}/runs"), log_every=1)
    finally:  # the checks below read the run past the proxy
        monkeypatch.undo()
        proxy.close()
    parts = [path for method, path in proxy.seen if method == "PUT" and "model.pt?" in path]
    assert [status for _, _, status in proxy.served] == [503] * THROTTLED + [403], parts
    assert len(parts) == THROTTLED + 2  # the refused part was not sent again

    message = str(caught.value)
    assert isinstance(caught.value, RunStoppedError)  # a stopped run: the CLI exits with 3
    assert "\n" not in message
    run_dir = message.rsplit(" --resume ", 1)[1]
    assert run_dir.startswith(f"s3://{bucket}/runs/")
    refused = parts[-1].split("?")[0]
    assert message.startswith(f"storage: s3:/{refused}: access denied (HTTP 403); the run "
                              "stopped in epoch 2 of 2 at once (not retried, no restart); ")
    assert message.endswith("its newest checkpoint is of epoch 1; once that is fixed, "
                            f"continue it with: adasim-ray pretrain --resume {run_dir}")
    # each epoch trained and logged once; the worker group never restarted
    assert [row["epoch"] for row in MetricsLog(run_dir).read()] == [1, 2]
    assert resumes(run_dir) == []
    assert int(read_meta(latest_checkpoint(run_dir))["epoch"]) == 1
