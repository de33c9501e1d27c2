"""Ray Data blocks of several fetch batches: whole batches in order, bounded in bytes, at least
three a rank's epoch, and the views of a run the same whatever the grouping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adasim_ray.train.batches import fetch_batches
from adasim_ray.train.pipeline import MIN_BLOCKS, group_batches


@pytest.mark.parametrize(("per_rank", "batch_size", "batch_bytes", "block_mb"), [
    (3000, 64, 100_352, 2.0),   # the demo's digits: 16 batches a block
    (1000, 64, 100_352, 2.0),   # 16 batches: the 3-block floor decides
    (5, 64, 100_352, 2.0),      # one short batch
    (1281, 128, 2 * 128 * 3 * 224**2, 2.0),  # 224 px views: one batch a block
    (999, 10, 1 << 20, 7.5),
])
def test_blocks_are_whole_batches_in_order_and_bounded(per_rank, batch_size, batch_bytes,
                                                        block_mb):
    batches = fetch_batches(per_rank, batch_size)
    blocks = group_batches(batches, batch_bytes, block_mb)
    assert np.array_equal(np.concatenate(blocks), np.arange(per_rank))
    starts = {int(b[0]) for b in batches}
    assert all(int(block[0]) in starts for block in blocks)  # cut at batch starts only
    assert len(blocks) >= min(MIN_BLOCKS, len(batches))
    sizes = [len(b) for b in batches]
    for block in blocks:
        n_batches = sum(1 for b in batches if block[0] <= b[0] <= block[-1])
        assert n_batches == 1 or n_batches * batch_bytes <= block_mb * 2**20
    if batch_bytes * 2 <= block_mb * 2**20 and len(batches) >= 2 * MIN_BLOCKS:
        assert len(blocks) < len(batches)  # small views do travel grouped
    assert max(sizes) - min(sizes) <= 1


def _epoch_pairs(cfg, run_name, block_mb):
    """(blocks, the epoch's columns) of rank 0 of 1, blocks of ``block_mb`` MiB."""
    from adasim_ray.train.pipeline import rank_dataset

    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, fetch_block_mb=block_mb))
    dataset = rank_dataset(cfg, run_name, 96, 0, 1, 16, f"launch-{block_mb}", 2 * 8 * 8)
    rows = list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    return len(rows), {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def test_grouped_blocks_carry_the_same_pairs(ray_session):
    import ray

    from adasim_ray.config import load_config
    from adasim_ray.train.board import create_plan_board

    cfg = load_config(None, ["data=digits", "limit_images=96", "batch_size=16"])
    board = create_plan_board("fetch-blocks")
    plan = np.roll(np.arange(96), 5)  # every partner another image
    ray.get(board.publish.remote(0, [ray.put(plan)]))
    one, alone = _epoch_pairs(cfg, "fetch-blocks", 1e-6)  # a batch a block
    few, grouped = _epoch_pairs(cfg, "fetch-blocks", 64.0)
    ray.kill(board)
    assert (one, few) == (6, MIN_BLOCKS)
    assert alone.keys() == grouped.keys()
    for key in alone:
        assert np.array_equal(alone[key], grouped[key]), key
    assert np.array_equal(alone["partner_id"], plan[alone["anchor_id"]])
    assert sorted(alone["anchor_id"]) == list(range(96))


def test_an_epoch_resumed_inside_makes_the_rest_of_its_pairs(ray_session):
    """A start position on the board (a checkpoint inside the epoch) leaves out the pairs
    before it, blocks wholly before it included, and the rest are the uninterrupted epoch's."""
    import ray

    from adasim_ray.config import load_config
    from adasim_ray.train.board import create_plan_board

    cfg = load_config(None, ["data=digits", "limit_images=96", "batch_size=16"])
    board = create_plan_board("fetch-start")
    plan = ray.put(np.roll(np.arange(96), 5))
    ray.get(board.publish.remote(0, [plan]))
    _, whole = _epoch_pairs(cfg, "fetch-start", 2e-6)  # a batch a block
    for start in (21, 48):  # inside a fetch batch; at one's start, after 3 whole blocks
        ray.get(board.publish.remote(0, [plan], start))
        _, rest = _epoch_pairs(cfg, "fetch-start", 2e-6)
        assert rest["position"].tolist() == list(range(start, 96))
        for key in whole:
            assert np.array_equal(rest[key], whole[key][start:]), (start, key)
    ray.kill(board)
