"""The online evaluation's split over ranks: the contiguous ranges of ``shard_ranges``, as
the cache shards split the ids; its gather of the features, a block of rows at a time in the
wire dtype, on a real two-process gloo group. (The two-worker run of ``test_pretrain.py``
checks its figure against one process evaluating the checkpoint.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasim_ray.engine.shard import shard_ranges
from adasim_ray.train.online_eval import gather_rows, wire_dtype


@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 7), (1000, 4), (5, 1)])
def test_shares_cover_the_images_once_in_order(n, world):
    ranges = shard_ranges(n, world)
    assert len(ranges) == world and ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_one_rank_gathers_its_own_rows():
    part = np.arange(12, dtype=np.float32).reshape(4, 3)
    rows = gather_rows(part, [4], 0, 1, torch.device("cpu"), torch.float16)
    # No copy and no rounding: one worker evaluates exactly as evaluate_backbone.
    assert rows.dtype == torch.float32 and np.shares_memory(rows.numpy(), part)


def test_features_travel_in_the_cache_dtype_on_gpus_only():
    assert wire_dtype("float16", torch.device("cuda", 0)) == torch.float16
    assert wire_dtype("bfloat16", torch.device("cuda", 0)) == torch.bfloat16
    assert wire_dtype("float16", torch.device("cpu")) == torch.float32


SIZES = [7, 6]  # shard_ranges(13, 2): the last block of rank 1 is padded
WIDTH = 5
#: (dtype, block_bytes): 3 rows a block in float16 (2 ranks x 3 rows x 5 x 2 bytes = 60),
#: 1 row a block in float32, and the whole part in one block.
CASES = [("float16", 60), ("float32", 40), ("bfloat16", 60), ("float16", 1 << 20)]


def _part(rank: int) -> np.ndarray:
    rng = np.random.default_rng(rank)
    return rng.standard_normal((SIZES[rank], WIDTH)).astype(np.float32)


def _gather_in_group(rank: int, world: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world)
    try:
        real_gather, sent = dist.gather, []

        def recording_gather(tensor, *args, **kwargs):
            sent.append(tensor.numel() * tensor.element_size())
            return real_gather(tensor, *args, **kwargs)

        dist.gather = recording_gather  # online_eval calls dist.gather through the module
        results = []
        for dtype, block_bytes in CASES:
            sent.clear()
            rows = gather_rows(_part(rank), SIZES, rank, world, torch.device("cpu"),
                               getattr(torch, dtype), block_bytes)
            results.append({"rows": rows, "sent": list(sent)})
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gathered(tmp_path_factory) -> list[list[dict]]:
    folder = tmp_path_factory.mktemp("gloo")
    # Forked, not spawned: a spawned child imports the package anew (torchvision...), which
    # takes half a minute on a loaded machine; the children's tensors are far too small for
    # the parent's thread pools to matter.
    mp.start_processes(_gather_in_group, args=(2, str(folder)), nprocs=2, join=True,
                       start_method="fork")
    return [torch.load(folder / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_two_ranks_gather_the_concatenation_in_the_wire_dtype(gathered, case):
    dtype = getattr(torch, CASES[case][0])
    rank0, rank1 = gathered[0][case], gathered[1][case]
    assert rank1["rows"] is None
    rows = rank0["rows"]
    assert rows.dtype == dtype and rows.device.type == "cpu"
    whole = torch.from_numpy(np.concatenate([_part(0), _part(1)]))
    assert torch.equal(rows, whole.to(dtype))  # exactly the concatenation, rounded once
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(rows.float(), whole, rtol=eps, atol=0)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_block_size_bounds_each_collective(gathered, case):
    dtype, block_bytes = CASES[case]
    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    rows = min(max(SIZES), block_bytes // (2 * WIDTH * itemsize))
    for rank in (0, 1):
        sent = gathered[rank][case]["sent"]
        assert len(sent) == math.ceil(max(SIZES) / max(1, rows))  # every rank, same calls
        assert all(2 * size <= max(block_bytes, 2 * WIDTH * itemsize) for size in sent)
    if block_bytes >= 2 * max(SIZES) * WIDTH * itemsize:  # one block: the part, no more
        assert gathered[0][case]["sent"] == [max(SIZES) * WIDTH * itemsize]
