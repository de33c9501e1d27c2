"""The partner fetch of one Ray Data task process: positions of rank r's share of the epoch ->
(anchor view, partner view) pairs, the images taken by index from the source it opened once.

The anchors of an epoch are a permutation seeded by (seed, epoch); the partner of anchor i is
the epoch's plan at i, read from the run's plan board (:mod:`adasim_ray.train.board`). An
epoch resumed from a checkpoint inside it starts at a position the board gives: the pairs
before it are left out, those after it are the ones an uninterrupted run makes.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray
import torch

from adasim_ray.config import PretrainConfig
from adasim_ray.recipe import make_views, open_train_source
from adasim_ray.train.allocator import keep_freed_memory
from adasim_ray.train.batches import fetch_batches
from adasim_ray.train.board import plan_board_name

#: Niceness of the thread that makes the views in a fetch process. Where the fetch shares its
#: cores with a Train worker (a laptop, a CPU node), a fetch task at the training's priority
#: preempts one of the training step's OpenMP threads and the whole step waits for it; at 19 it
#: runs in the cores' idle time (the step's serial Python, the waits for data) instead. Where
#: cores are free (a GPU node) it changes nothing. One thread rather than the process: Ray may
#: hand the process to another task or actor later, and a niceness cannot be lowered again.
FETCH_NICENESS = 19


def lower_this_threads_priority(niceness: int) -> None:
    """Raise the calling thread's niceness to ``niceness`` (Linux: a thread's own; elsewhere
    nothing, since a thread id is not a process id there)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError:  # a container that forbids it: the fetch runs at the process's priority
        pass


def _fetch_thread_setup() -> None:
    torch.set_num_threads(1)  # torch's thread count is per thread: set it in this one too
    lower_this_threads_priority(FETCH_NICENESS)


def epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """The anchors of an epoch in training order: a permutation seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0xADA]).permutation(num_images)


class PairFetcher:
    """``map_batches`` callable: positions of rank r's share -> anchor and partner views."""

    def __init__(
        self, cfg: PretrainConfig, run_name: str, num_images: int, rank: int, world: int,
        batch_size: int,
    ) -> None:
        # One torch thread: the fetch shares the node's cores with the training step, and an
        # idle OpenMP team spinning here would slow both (measured on 2 cores: 3x slower).
        torch.set_num_threads(1)
        keep_freed_memory()  # the views' buffers, as the Train worker's activations
        self.cfg = cfg
        self.source = open_train_source(self.cfg)
        self.views = make_views(self.cfg, self.source)
        self.num_images, self.rank, self.world = num_images, rank, world
        self.per_rank = num_images // world
        # Where each fetch batch starts (batches.fetch_batches): a block holds several.
        sizes = [len(b) for b in fetch_batches(self.per_rank, batch_size)]
        self._batch_starts = np.cumsum([0, *sizes[:-1]])
        self.board = ray.get_actor(plan_board_name(run_name))
        self._epoch, self._start = -1, 0
        self._order = np.empty(0, dtype=np.int64)
        self._plan = np.empty(0, dtype=np.int64)
        self._worker = ThreadPoolExecutor(max_workers=1, initializer=_fetch_thread_setup,
                                          thread_name_prefix="adasim-fetch")

    def _sync_epoch(self) -> None:
        epoch, plan, self._start = ray.get(self.board.current.remote())
        if epoch != self._epoch:
            if epoch < 0:
                raise RuntimeError("no partner plan was published before the epoch started")
            self._plan = np.asarray(ray.get(plan[0]))
            if self._plan.shape != (self.num_images,):
                raise RuntimeError(
                    f"plan of shape {self._plan.shape}, expected N={self.num_images}"
                )
            self._order = epoch_order(self.cfg.seed, epoch, self.num_images)
            self._epoch = epoch

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The block's pairs, made in this process's fetch thread (:data:`FETCH_NICENESS`)."""
        return self._worker.submit(self._block_pairs, block["data"].astype(np.int64)).result()

    def _block_pairs(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Each fetch batch of the block on its own (its views seeded by its first position),
        then all in one block. Positions before the epoch's start are left out: a batch
        wholly before it is not made, one across it is made whole (its views depend on its
        first position) and cut."""
        self._sync_epoch()
        which = np.searchsorted(self._batch_starts, positions, side="right")
        batches = np.split(positions, np.flatnonzero(np.diff(which)) + 1)
        parts = [self._pairs(p) for p in batches if p[-1] >= self._start]
        if self._start and parts:
            keep = parts[0]["position"] >= self._start
            parts[0] = {key: value[keep] for key, value in parts[0].items()}
        if not parts:
            return self._no_pairs()
        if len(parts) == 1:
            return parts[0]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _no_pairs(self) -> dict[str, np.ndarray]:
        """An empty block of the pairs' columns (a block wholly before the epoch's start)."""
        view = np.empty((0, self.views.channels, self.views.size, self.views.size), np.uint8)
        ids = np.empty(0, dtype=np.int64)
        return {"anchor_id": ids, "partner_id": ids, "epoch": ids, "position": ids,
                "anchor": view, "partner": view}

    def _pairs(self, rank_positions: np.ndarray) -> dict[str, np.ndarray]:
        positions = self.rank * self.per_rank + rank_positions
        anchors = self._order[positions]
        partners = self._plan[anchors]
        # One generator per batch, seeded by (seed, epoch, first position): batches are fixed
        # blocks of positions, so the views are reproducible. The views decode each image
        # once (once for both views where j* = i) and leave as uint8 crops, a quarter of
        # float32's bytes through the object store; the Train worker normalises them on its
        # device (GlobalViews.normalize).
        rng = np.random.default_rng([self.cfg.seed, self._epoch, int(positions[0])])
        anchor_views, partner_views = self.views.pair_views(self.source, anchors, partners, rng)
        return {
            "anchor_id": anchors,
            "partner_id": partners,
            "epoch": np.full(len(anchors), self._epoch, dtype=np.int64),
            "position": rank_positions,
            "anchor": anchor_views.numpy(),
            "partner": partner_views.numpy(),
        }
