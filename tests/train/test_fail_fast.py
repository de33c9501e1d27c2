"""A run that the Ray it runs on can never place fails at once, in one line naming the field,
instead of Ray Train retrying "insufficient resources" forever."""

from __future__ import annotations

import time

import pytest

from adasim_ray.config import ConfigError, load_config
from adasim_ray.presets import default_config_path

pytestmark = pytest.mark.ray


def test_two_workers_of_two_cpus_on_a_two_cpu_ray_fail_in_seconds(ray_session, tmp_path):
    from adasim_ray.train.run import pretrain

    cfg = load_config(default_config_path(), ["data=digits", "limit_images=300",
                                              "ray.num_workers=2", "batch_size=32"])
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        pretrain(cfg, str(tmp_path))
    assert time.perf_counter() - start < 30
    assert str(err.value).startswith(
        "ray.cpus_per_worker: 2 Train workers x 2 CPUs = 4, this cluster has 2 CPUs")
    assert not any(tmp_path.iterdir())  # no run directory begun

