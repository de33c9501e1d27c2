"""Run storage with its errors told apart (``resources/store.py``), against the S3 server on
127.0.0.1 behind a proxy that fails chosen requests (``tests/s3_faults.py``), more of them in
a row than pyarrow's client retries by default (3): a transient error is retried and the
operation succeeds, a permanent one is one line naming the URI and the cause, sent once; a
staging disk that is really full (a small tmpfs) is refused before the save writes to it."""

from __future__ import annotations

import errno
import subprocess
import tempfile

import pyarrow.fs as pafs
import pytest
import torch

from adasim_ray.errors import StorageError
from adasim_ray.resources.store import SDK_ATTEMPTS, classify, permanent_error, resolve
from adasim_ray.rundir.checkpoint import load_state_file, save_state_file
from adasim_ray.rundir.layout import read_text, write_text
from tests.s3_faults import FaultProxy


@pytest.fixture
def proxy(s3_server, monkeypatch):
    """The proxy in front of the S3 server; this process's clients go through it."""
    found = FaultProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{found.endpoint}")
    yield found
    found.close()


def test_errors_are_told_apart():
    assert classify(OSError(errno.ENOSPC, "No space left on device"))[0] == "permanent"
    assert classify(OSError("AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: "
                            "curlCode: 56"))[0] == "transient"
    assert classify(OSError("AWS Error UNKNOWN (HTTP status 503) during X"))[0] == "transient"
    assert classify(OSError("AWS Error NO_SUCH_BUCKET during X")) == (
        "permanent", "no such bucket (HTTP 404)")
    assert classify(FileNotFoundError(errno.ENOENT, "missing"))[0] == "other"
    err = permanent_error(OSError("When uploading part for key 'runs/r/model.pt' in bucket "
                                  "'b': AWS Error ACCESS_DENIED during UploadPart"))
    assert str(err) == "storage: s3://b/runs/r/model.pt: access denied (HTTP 403)"


def test_a_transient_outage_longer_than_the_clients_retries_is_retried(s3_server, proxy):
    bucket = s3_server.bucket()
    write_text(f"s3://{bucket}/runs/r/metrics.jsonl", "{}\n")
    # more 500s in a row on the listing than the client's own attempts, then it answers
    proxy.fail("GET", rf"^/{bucket}\?list-type", status=500, code="InternalError",
               times=SDK_ATTEMPTS + 3)
    fs, path = resolve(f"s3://{bucket}/runs")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    assert [i.base_name for i in infos if i.type == pafs.FileType.File] == ["metrics.jsonl"]
    assert len(proxy.served) == SDK_ATTEMPTS + 3
    # throttling and resets on a small write, fewer than the client's attempts: its own retries
    proxy.fail("PUT", rf"^/{bucket}/runs/r/summary", status=503, code="SlowDown", times=3)
    proxy.fail("PUT", rf"^/{bucket}/runs/r/summary", status=None, times=2)
    write_text(f"s3://{bucket}/runs/r/summary.json", '{"ok": 1}')
    assert read_text(f"s3://{bucket}/runs/r/summary.json") == '{"ok": 1}'
    assert [s[2] for s in proxy.served[-5:]] == [503, 503, 503, "reset", "reset"]


def test_a_permanent_error_is_one_line_and_sent_once(s3_server, proxy):
    bucket = s3_server.bucket()
    proxy.fail("HEAD", rf"^/{bucket}/runs/r/config\.yaml$", status=403, code="AccessDenied",
               times=10)
    fs, path = resolve(f"s3://{bucket}/runs/r/config.yaml")
    with pytest.raises(StorageError) as caught:
        fs.get_file_info(path)
    assert str(caught.value) == (f"storage: s3://{bucket}/runs/r/config.yaml: access denied "
                                 "(HTTP 403)")
    assert len(proxy.served) == 1  # neither the client nor the store asked again
    with pytest.raises(StorageError, match=r"^storage: s3://b-nothere-123/runs: no such "
                                           r"bucket \(HTTP 404\)$"):
        write_text("s3://b-nothere-123/runs/x", "x")



def test_an_upload_part_refused_or_throttled_beyond_the_client_is_not_lost(s3_server, proxy):
    """pyarrow's copy_files drops a stream's close error (the part's): an upload checks it."""
    bucket = s3_server.bucket()
    uri = f"s3://{bucket}/runs/r/shards/epoch_00001-ab/cache_shard_0.pt"
    part = r"/cache_shard_0\.pt\?partNumber=1&uploadId="
    state = {"rows": torch.arange(4096.0)}
    proxy.fail("PUT", part, status=503, code="SlowDown", times=SDK_ATTEMPTS + 1)
    assert save_state_file(state, uri) > 0  # the whole file sent again, after the client
    assert [s[2] for s in proxy.served] == [503] * (SDK_ATTEMPTS + 1)
    assert torch.equal(load_state_file(uri)["rows"], state["rows"])
    proxy.fail("PUT", part, status=403, code="AccessDenied", times=3)
    with pytest.raises(StorageError) as caught:
        save_state_file(state, uri.replace("00001", "00002"))
    assert str(caught.value) == (f"storage: {uri.replace('00001', '00002')}: access denied "
                                 "(HTTP 403)")
    assert [s[2] for s in proxy.served].count(403) == 1

def test_a_download_throttled_beyond_the_client_is_retried_a_refused_one_is_one_line(
    s3_server, proxy, tmp_path
):
    """Reads of run storage (a checkpoint's files, a resume's, ``init``'s weights) go through
    the same layer: retried whole on a transient error, one line on a permanent one."""
    from adasim_ray.rundir.checkpoint import read_checkpoint, write_checkpoint

    bucket = s3_server.bucket()
    uri = f"s3://{bucket}/runs/r/shards/epoch_00001-ab/cache_shard_0.pt"
    state = {"rows": torch.arange(4096.0)}
    save_state_file(state, uri)
    shard = r"/cache_shard_0\.pt$"
    proxy.fail("GET", shard, status=503, code="SlowDown", times=SDK_ATTEMPTS + 1)
    assert torch.equal(load_state_file(uri)["rows"], state["rows"])
    assert [s[2] for s in proxy.served] == [503] * (SDK_ATTEMPTS + 1)
    proxy.fail("GET", shard, status=403, code="AccessDenied", times=3)
    with pytest.raises(StorageError) as caught:
        load_state_file(uri)
    assert str(caught.value) == f"storage: {uri}: access denied (HTTP 403)"
    assert [s[2] for s in proxy.served].count(403) == 1
    # a checkpoint's model file, read back by a resume or `export`
    (tmp_path / "checkpoint_000001").mkdir()
    write_checkpoint(tmp_path / "checkpoint_000001", model_state={"model": state},
                     meta={"epoch": 1})
    s3_server.upload(tmp_path / "checkpoint_000001", f"{bucket}/runs/r/checkpoint_000001")
    checkpoint = f"s3://{bucket}/runs/r/checkpoint_000001"
    proxy.fail("GET", r"/checkpoint_000001/model\.pt$", status=None, times=SDK_ATTEMPTS + 1)
    _, model, _ = read_checkpoint(checkpoint, shards=False)
    assert torch.equal(model["model"]["rows"], state["rows"])
    assert [s[2] for s in proxy.served][-(SDK_ATTEMPTS + 1):] == ["reset"] * (SDK_ATTEMPTS + 1)


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 2 MiB tmpfs, filled but for about 100 KiB (mounting needs root)."""
    where = tmp_path / "staging"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        (where / "filler").write_bytes(b"\0" * (2 * 2**20 - 100 * 2**10))
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_staging_disk_is_refused_before_the_save(s3_server, full_tmpfs, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(full_tmpfs))
    bucket = s3_server.bucket()
    uri = f"s3://{bucket}/runs/r/shards/epoch_00001-ab/cache_shard_0.pt"
    state = {"rows": torch.zeros(256, 512), "ids": torch.arange(256)}  # 0.5 MiB
    with pytest.raises(StorageError) as caught:
        save_state_file(state, uri)
    message = str(caught.value)
    assert message.startswith(f"storage: {full_tmpfs}: no space left for staging "
                              f"cache_shard_0.pt for {uri} (0.1 MiB free, 1.5 MiB needed)")
    assert "\n" not in message and message.endswith("point TMPDIR at a larger disk")
    # caught before: nothing staged on the full disk, nothing sent to the bucket
    assert [p.name for p in full_tmpfs.iterdir()] == ["filler"]
    fs, path = resolve(f"s3://{bucket}/runs")
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    # the same disk with room: saved (the check does not refuse what fits)
    (full_tmpfs / "filler").unlink()
    assert save_state_file(state, uri) > 0


def test_a_full_disk_for_a_downloads_copy_is_one_line_before_it(s3_server, full_tmpfs,
                                                                monkeypatch):
    bucket = s3_server.bucket()
    uri = f"s3://{bucket}/runs/r/shards/epoch_00001-ab/cache_shard_0.pt"
    state = {"rows": torch.zeros(256, 512)}  # 0.5 MiB
    save_state_file(state, uri)
    monkeypatch.setattr(tempfile, "tempdir", str(full_tmpfs))
    with pytest.raises(StorageError) as caught:
        load_state_file(uri)
    message = str(caught.value)
    assert message.startswith(f"storage: {full_tmpfs}/adasim-restore-")
    assert f"no space left for a copy of {uri} (0.1 MiB free, 0.5 MiB needed)" in message
    assert "\n" not in message and message.endswith("point TMPDIR at a larger disk")
    (full_tmpfs / "filler").unlink()
    assert torch.equal(load_state_file(uri)["rows"], state["rows"])
