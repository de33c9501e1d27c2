"""The online evaluation's split over ranks: the contiguous ranges of ``shard_ranges``, as
the cache shards split the ids. (The two-worker run of ``test_pretrain.py`` checks its
figure against one process evaluating the checkpoint.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasim_ray.engine.shard import shard_ranges
from adasim_ray.train.online_eval import gather_rows


@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 7), (1000, 4), (5, 1)])
def test_shares_cover_the_images_once_in_order(n, world):
    ranges = shard_ranges(n, world)
    assert len(ranges) == world and ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_one_rank_gathers_its_own_rows():
    part = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert gather_rows(part, [4], 0, 1, torch.device("cpu")) is part
