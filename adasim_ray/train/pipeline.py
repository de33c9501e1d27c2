"""The Ray Data pipeline that feeds the Train workers with (anchor view, partner view) pairs.

Each epoch every image i is an anchor once, in an order shuffled with (seed, epoch); its partner
j* comes from the epoch's plan (the cache shards compute it at the end of the previous epoch, so
it is known before the epoch starts). Rank r of W reads its own dataset of positions
``[r * P, (r + 1) * P)`` with ``P = N // W`` (the N mod W images left over change every epoch
and are simply not anchors that epoch: the window handles unseen images). Every rank therefore
runs the same number of steps, and which image a rank sees does not depend on Ray Data's
scheduling: runs are reproducible.

Fetching by index: Ray Data has no fast random access of its own, so the fetch stage is a
``map_batches`` task whose process keeps the image source opened once (MNIST is an in-memory
array, Parquet a combined in-memory Arrow table, a folder reads files on demand) and takes rows
by index (:mod:`adasim_ray.train.fetcher`); decoding and augmentation happen there, off the
training loop. (Tasks, not an actor pool: Ray Data rebuilds an actor pool at every epoch.)

This module imports Ray and numpy only: the datasets it builds are unpickled by processes that
never fetch (Ray Train's controller, its dataset manager), and a module of torch, torchvision
and timm cost each of them seconds of CPU at every start (measured on 2 cores: 73 CPU-seconds
to start a small run, of which ~17 in three such processes). The fetch task imports the fetcher
when it first runs, and gets the config pickled, as bytes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import cloudpickle

from adasim_ray.train.batches import fetch_batches

if TYPE_CHECKING:
    from adasim_ray.config import PretrainConfig
    from adasim_ray.train.fetcher import PairFetcher


_FETCHERS: dict[tuple[Any, ...], PairFetcher] = {}
#: The exit status of a fetch process whose first imports were cut short (:func:`open_fetcher`).
CUT_SHORT_EXIT = 75


def open_fetcher(config: bytes, **kwargs: Any) -> PairFetcher:
    """A :class:`PairFetcher` of the pickled ``config``, imported in this process on first use.

    Ray cancels a run's fetch tasks when the run ends (a ``KeyboardInterrupt`` in the task).
    One that lands in this process's first ``import torch`` leaves torch half-initialised
    here for good: every later task in the pooled process fails ("SystemError: ... bad call
    flags", or worse), and with it every run after on the same Ray. The process exits instead,
    and Ray runs the next task in another.
    """
    try:
        from adasim_ray.train.fetcher import PairFetcher

        return PairFetcher(cloudpickle.loads(config), **kwargs)
    except KeyboardInterrupt:
        os._exit(CUT_SHORT_EXIT)


def fetch_pairs(batch: dict[str, np.ndarray], launch: str, config: bytes,
                **kwargs: Any) -> dict[str, np.ndarray]:
    """Ray Data task body: the process keeps the opened :class:`PairFetcher` of the current
    launch and rank, so the image source is opened once per process, not once per block.

    The key holds a per-launch id: a resumed run keeps its name but has new actors.
    ``config`` is the run's config pickled: opaque bytes to the processes that only pass the
    dataset on, the config itself (its class made from the method registry of the driver, a
    method registered there included) here.
    """
    key = (launch, kwargs["rank"], kwargs["world"])
    fetcher = _FETCHERS.get(key)
    if fetcher is None:
        if len(_FETCHERS) >= 4:  # a long-lived process serving many runs: forget old ones
            _FETCHERS.clear()
        # imported here rather than at the top: see the module's docstring
        fetcher = _FETCHERS[key] = open_fetcher(config, **kwargs)
    return fetcher(batch)


#: A rank's epoch is at least this many Ray Data blocks (when it has as many fetch batches):
#: the training consumes one while the fetch tasks make the next.
MIN_BLOCKS = 3


def group_batches(batches: list[np.ndarray], batch_bytes: int,
                  block_mb: float) -> list[np.ndarray]:
    """The fetch batches as Ray Data blocks: consecutive whole batches, as many per block as
    fit in ``block_mb`` MiB of views (``batch_bytes`` each; at least one), and at least
    :data:`MIN_BLOCKS` blocks where there are as many batches.

    Examples:
        >>> parts = fetch_batches(10, 3)
        >>> [len(p) for p in parts]
        [3, 3, 2, 2]
        >>> [b.tolist() for b in group_batches(parts, batch_bytes=1 << 20, block_mb=2)]
        [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
        >>> [len(b) for b in group_batches(parts, batch_bytes=1 << 20, block_mb=0.5)]
        [3, 3, 2, 2]
    """
    fit = int(block_mb * 2**20 // max(batch_bytes, 1))
    per_block = max(1, min(fit, -(-len(batches) // MIN_BLOCKS)))
    return [np.concatenate(batches[k:k + per_block])
            for k in range(0, len(batches), per_block)]


def rank_dataset(
    cfg: PretrainConfig,
    run_name: str,
    num_images: int,
    rank: int,
    world: int,
    batch_size: int,
    launch: str,
    pair_bytes: int = 0,
) -> ray.data.Dataset:
    """Rank ``rank``'s stream of pairs: ``P = N // W`` positions mapped through the fetch tasks.

    Tasks rather than an actor pool: Ray Data builds an actor pool anew for every execution,
    i.e. every epoch (seconds each), while task processes and their opened source persist.
    A block holds whole fetch batches, up to ``ray.fetch_block_mb`` of views
    (``pair_bytes`` a pair, uint8; 0 = one batch a block): a block costs the pipeline the
    same whatever its size, and 64 digit pairs are 100 KB.
    """
    per_rank = num_images // world
    batches = fetch_batches(per_rank, batch_size)
    # In-memory blocks rather than ray.data.range: a read task needs a CPU, and the Train
    # workers may hold all of them (2 workers on 2 CPUs: the read would wait forever).
    positions = ray.data.from_numpy(group_batches(
        batches, batch_size * pair_bytes if pair_bytes else 2**62, cfg.ray.fetch_block_mb))
    # Same seed and config, same batches in the same order: runs are reproducible.
    positions.context.execution_options.preserve_order = True
    return positions.map_batches(
        fetch_pairs,
        fn_kwargs={
            "launch": launch,
            "config": cloudpickle.dumps(cfg),
            "run_name": run_name,
            "num_images": num_images,
            "rank": rank,
            "world": world,
            "batch_size": batch_size,
        },
        batch_size=None,  # the whole block: its fetch batches are split by the fetcher
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=cfg.ray.fetch_actors),
        num_cpus=cfg.ray.fetch_cpus,
    )
