"""Only the process that restores the cache shards reads their states (about 4.9 GB at
ImageNet-1k): every other rank reads the model file alone."""

from __future__ import annotations

import pytest
import torch

from adasim_ray.errors import CheckpointError
from adasim_ray.rundir import checkpoint
from adasim_ray.rundir.checkpoint import read_checkpoint, write_checkpoint


def test_a_rank_without_shards_reads_the_model_file_only(tmp_path, monkeypatch):
    shards = [{"rows": torch.full((64, 8), float(s))} for s in range(3)]
    write_checkpoint(tmp_path, model_state={"w": torch.ones(4)}, shard_states=shards,
                     meta={"epoch": 1, "settings": {"cache_shards": 3}})
    loaded: list[str] = []
    real_load = torch.load

    def load(path, *args, **kwargs):
        loaded.append(path.name)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", load)
    meta, state, states = read_checkpoint(tmp_path, shards=False)
    assert loaded == ["model.pt"] and states == [] and meta["epoch"] == 1
    assert torch.equal(state["w"], torch.ones(4))
    loaded.clear()
    _, _, states = read_checkpoint(tmp_path)
    assert loaded == ["model.pt", "cache_shard_0.pt", "cache_shard_1.pt", "cache_shard_2.pt"]
    assert [float(s["rows"][0, 0]) for s in states] == [0.0, 1.0, 2.0]


class _RunsCode:
    """Pickles as a call of os.system: what a hostile checkpoint file would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "ck").mkdir()
    write_checkpoint(tmp_path / "ck", model_state={"w": torch.ones(2), "x": _RunsCode(marker)},
                     shard_states=[], meta={"epoch": 1, "settings": {"cache_shards": 0}})
    with pytest.raises(CheckpointError, match="refused to load: it would call") as refused:
        read_checkpoint(tmp_path / "ck")
    assert "model.pt" in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()  # nothing ran


def test_a_refused_file_on_object_storage_is_named_by_its_uri(tmp_path, s3_server):
    """A checkpoint read from S3 goes through a local temporary copy; the one-line error
    names the file where it is (its URI), not the copy, which is gone by then."""
    marker = tmp_path / "ran"
    local = tmp_path / "ck"
    local.mkdir()
    write_checkpoint(local, model_state={"w": torch.ones(2), "x": _RunsCode(marker)},
                     shard_states=[], meta={"epoch": 1, "settings": {"cache_shards": 0}})
    bucket = s3_server.bucket()
    s3_server.upload(local, f"{bucket}/run/checkpoint_000000")
    uri = s3_server.uri(f"{bucket}/run/checkpoint_000000")
    with pytest.raises(CheckpointError, match="refused to load: it would call") as refused:
        read_checkpoint(uri)
    assert str(refused.value).startswith(f"{uri}/model.pt: ")
    assert "adasim-restore-" not in str(refused.value)
    assert not marker.exists()
