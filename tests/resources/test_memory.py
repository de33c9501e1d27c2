"""The memory of the bootstrapping state as `launch.py check` reports it (the engine's own
allocation is compared in tests/test_check.py)."""

from __future__ import annotations

import pytest

from adasim_ray.resources.memory import (
    ID_BYTES,
    MASK_BYTES,
    PARTNER_BYTES,
    human_bytes,
    shard_footprint,
)


def test_footprint_follows_the_dtypes():
    n, d, w, k = 1000, 384, 50, 10
    half = shard_footprint(n, d, w, k, "float16", "float16")
    full = shard_footprint(n, d, w, k, "float32", "float32")
    assert (half.cache, full.cache) == (n * d * 2, n * d * 4)
    assert half.window == n * w * k * (ID_BYTES + 2)
    assert full.window == n * w * k * (ID_BYTES + 4)
    assert half.seen == n * w * MASK_BYTES and half.partners == n * PARTNER_BYTES
    assert shard_footprint(n, d, w, k, "bfloat16", "float16").cache == half.cache


def test_human_bytes_uses_decimal_units():
    assert human_bytes(1.97e9) == "1.97 GB"
    assert human_bytes(981_000) == "981.00 kB"
    assert human_bytes(999) == "999 B"


def test_staging_without_room_for_a_checkpoint_is_one_line(tmp_path):
    import shutil

    from adasim_ray.errors import ConfigError
    from adasim_ray.resources.storage import check_staging

    check_staging(1 << 20, str(tmp_path))
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ConfigError, match=r"checkpoint staging: .* MiB free, a checkpoint needs "
                                          r".*point TMPDIR at a larger disk"):
        check_staging(free + (1 << 40), str(tmp_path))
