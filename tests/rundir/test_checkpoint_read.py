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


@pytest.mark.parametrize("name", ["../../elsewhere/cache_shard_0.pt", "/etc/passwd",
                                  "s3://other-bucket/x.pt", "shards/../../x.pt"])
def test_a_meta_json_naming_a_file_outside_the_run_is_refused(tmp_path, name):
    import json

    ckpt = tmp_path / "run" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    write_checkpoint(ckpt, model_state={"w": torch.ones(2)}, shard_files=[("shards/a.pt", 3)],
                     meta={"epoch": 1, "settings": {}})
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["shard_files"] = [[name, 3]]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="outside the run directory: not loaded"):
        checkpoint.read_meta(ckpt)


def test_every_random_state_survives_a_checkpoint(tmp_path):
    import random

    import numpy as np

    from adasim_ray.rundir.checkpoint import restore_rng, rng_state

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    random.gauss(0, 1)  # a cached Gaussian in Python's state too
    write_checkpoint(tmp_path, model_state={"rng": rng_state()}, meta={"epoch": 1})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    _, state, _ = read_checkpoint(tmp_path, shards=False)  # weights_only loads it
    restore_rng(state["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    restore_rng(torch.get_rng_state())  # the older layout: torch's CPU state alone
