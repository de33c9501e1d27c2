"""The pre-flight that ``check`` prints in full and ``pretrain`` stops on: every finding kept,
in the order a run meets them, and what it built on the way."""

from __future__ import annotations

import pytest

from adasim_ray.config import load_config
from adasim_ray.errors import ConfigError, DataError
from adasim_ray.preflight import preflight


def test_a_sound_config_has_no_findings_and_sizes_the_method():
    found = preflight(load_config(None, ["data=digits", "epochs=2", "dino.warmup_epochs=1",
                                         "dino.out_dim=64"]))
    assert found.ok and found.num_images == len(found.source) > 0
    assert found.feat_dim and found.views is not None
    assert set(found.eval_sources) == {"train", "test"}
    assert found.state_bytes > 0
    found.raise_first()  # nothing to raise


def test_every_finding_is_kept_and_the_first_is_raised(tmp_path):
    (tmp_path / "train").mkdir()  # a folder data set without images: the eval split fails
    cfg = load_config(None, ["data=digits", f"eval_data=folder:{tmp_path}", "epochs=1",
                             "dino.warmup_epochs=3"])
    found = preflight(cfg)
    messages = [f.message for f in found.findings]
    assert len(messages) == 3, messages  # eval train split, eval test split, the method
    assert messages[0].startswith("eval data (train split):")
    assert messages[-1].startswith("dino: warmup_epochs=3")
    assert [f.kind for f in found.findings] == [DataError, DataError, ConfigError]
    with pytest.raises(DataError, match=r"^eval data \(train split\)"):
        found.raise_first()


def test_a_planned_data_set_opens_nothing():
    class Planned:
        channels, mean, std, native_size, mirror_invariant, labels = 3, (0.5,) * 3, \
            (0.25,) * 3, None, True, None

        def __len__(self) -> int:
            return 1000

    found = preflight(load_config(None, ["data=folder:/nowhere", "epochs=2",
                                         "dino.warmup_epochs=1"]), source=Planned())
    assert found.ok and found.eval_sources == {} and found.num_images == 1000
