"""One shard of the bootstrapping state, and S shards in one process.

A :class:`BootstrapShard` owns a contiguous range of image ids: their cache rows Z, their window
of top-K neighbours, and their partners for the running epoch. The Ray layer puts one shard in
each cache actor; :class:`Bootstrapper` runs S shards in-process with the same protocol (used by
tests, benchmarks and single-process runs).

One training step, for a batch of anchors with ids and teacher features:

1. every shard queries the batch against its rows, then writes the rows it owns;
2. the local top-K answers are merged into the global top-K (:func:`merge_topk`);
3. each owning shard records its images' global top-K in the window.

At the end of an epoch every shard closes the window slot and plans the next epoch.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from adasim_ray.engine.cache import SimilarityCache, TopK, merge_topk
from adasim_ray.engine.oracle import ClassMembers
from adasim_ray.engine.partners import BootstrapConfig, PlanStats, plan_window
from adasim_ray.engine.window import NeighbourWindow


def shard_ranges(num_images: int, shards: int) -> list[tuple[int, int]]:
    """Split ids [0, N) into ``shards`` contiguous ranges whose sizes differ by at most one."""
    if shards < 1:
        raise ValueError(f"cache_shards must be >= 1, got {shards}")
    if shards > num_images:
        raise ValueError(f"cache_shards ({shards}) must be <= the number of images ({num_images})")
    bounds = [round(s * num_images / shards) for s in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def check_ids(ids: torch.Tensor, num_images: int) -> torch.Tensor:
    """Return ``ids`` as int64, refusing ids outside [0, N)."""
    ids = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids, device="cpu")
    ids = ids.to(torch.int64)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_images):
        raise ValueError(
            f"ids out of range: got [{int(ids.min())}, {int(ids.max())}], "
            f"data set has N={num_images}"
        )
    return ids


class BootstrapShard:
    """Cache rows, window and partners of images [start, stop) of a data set of N images.

    Args:
        num_images: N, the data set size.
        start, stop: the owned id range.
        dim: feature dimension d of the cache.
        cfg: mode, tau, w, K, the storage dtypes (validated here, against N).
        seed: seeds the partner sampling.
        epochs: the run's number of epochs (the length of the oracle's schedule).
        device: where Z lives (a shard actor given a GPU puts it there).
        labels: optional (N,) int64 labels of the whole data set (-1 = unknown), used only for
            the NN / 2-NN accuracy metrics.
    """

    def __init__(
        self,
        num_images: int,
        start: int,
        stop: int,
        dim: int,
        cfg: BootstrapConfig,
        *,
        seed: int = 0,
        epochs: int = 1,
        device: str | torch.device = "cpu",
        labels: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg.validate(num_images)
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.seed, self.epochs = seed, epochs
        if not 0 <= start < stop <= num_images:
            raise ValueError(f"shard range [{start}, {stop}) must lie inside [0, {num_images})")
        if labels is not None and labels.shape != (num_images,):
            raise ValueError(f"labels must have shape ({num_images},), got {tuple(labels.shape)}")
        if cfg.mode == "oracle" and labels is None:
            raise ValueError("mode 'oracle' (same-class partners) needs labels; none were given")
        self.num_images = num_images
        self.start, self.stop = start, stop
        self.cache = SimilarityCache(start, stop, dim, dtype=cfg.cache_dtype, device=device)
        self.window = NeighbourWindow(start, stop, cfg.window, cfg.topk, sim_dtype=cfg.sim_dtype)
        self.labels = None if labels is None else labels.to(torch.int64)
        # The oracle's class index, built once (an argsort of N labels) rather than per epoch.
        self.members = ClassMembers(self.labels) if cfg.mode == "oracle" else None
        self.partners = torch.arange(start, stop, dtype=torch.int64, device="cpu")
        self.last_stats = PlanStats()

    @property
    def epochs_closed(self) -> int:
        return self.window.epochs_closed

    def query_and_write(self, ids: torch.Tensor, feats: torch.Tensor) -> TopK:
        """Step 1: local top-K of the batch (before its rows are written), then the write."""
        ids = check_ids(ids, self.num_images)
        top = self.cache.query_and_write(ids, feats, self.cfg.topk)
        return TopK(top.sims.cpu(), top.ids.cpu())

    def record(self, ids: torch.Tensor, top: TopK) -> None:
        """Step 3: keep the global top-K of the owned images among ``ids``."""
        ids = check_ids(ids, self.num_images)
        mine = (ids >= self.start) & (ids < self.stop)
        if mine.any():
            self.window.record(ids[mine], top.ids[mine], top.sims[mine])

    def end_epoch(self, threads: int | None = None) -> PlanStats:
        """Close the epoch and plan the next one (``threads`` chunks at once, see
        ``plan_window``); returns the new plan's metric counts."""
        self.window.end_epoch()
        self.partners, self.last_stats = plan_window(
            self.window, self.cfg, self.labels, members=self.members, seed=self.seed,
            epochs=self.epochs, threads=threads,
        )
        return self.last_stats

    def nbytes(self) -> int:
        """Bytes of state held: cache rows, written mask, window, partners."""
        cache = (
            self.cache.rows.numel() * self.cache.rows.element_size() + self.cache.written.numel()
        )
        return cache + self.window.nbytes() + self.partners.numel() * 8

    def state_dict(self) -> dict[str, object]:
        return {
            "num_images": self.num_images,
            "cfg": asdict(self.cfg) | {"seed": self.seed, "epochs": self.epochs},
            "cache": self.cache.state_dict(),
            "window": self.window.state_dict(),
            "partners": self.partners.clone(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state["num_images"] != self.num_images:
            raise ValueError(
                f"state is for N={state['num_images']} images, this shard has N={self.num_images}"
            )
        self.cache.load_state_dict(state["cache"])  # type: ignore[arg-type]
        self.window.load_state_dict(state["window"])  # type: ignore[arg-type]
        self.partners = state["partners"].clone()  # type: ignore[union-attr]


class Bootstrapper:
    """S :class:`BootstrapShard` s in one process, driven with the sharded protocol.

    Examples:
        >>> cfg = BootstrapConfig(mode="adasim", tau=0.2, window=1, topk=2)
        >>> boot = Bootstrapper(num_images=4, dim=3, cfg=cfg, shards=2)
        >>> _ = boot.step(torch.arange(4), torch.randn(4, 3))
        >>> _ = boot.end_epoch()
        >>> boot.partner_plan().shape
        torch.Size([4])
    """

    def __init__(
        self,
        num_images: int,
        dim: int,
        cfg: BootstrapConfig,
        shards: int = 1,
        labels: torch.Tensor | None = None,
        **shard_kwargs: object,
    ) -> None:
        self.num_images, self.cfg = num_images, cfg
        self.shards = [
            BootstrapShard(num_images, lo, hi, dim, cfg, labels=labels, **shard_kwargs)  # type: ignore[arg-type]
            for lo, hi in shard_ranges(num_images, shards)
        ]

    def step(self, ids: torch.Tensor, feats: torch.Tensor) -> TopK:
        """One training step's cache work; returns the batch's global top-K."""
        ids = check_ids(ids, self.num_images)
        parts = [shard.query_and_write(ids, feats) for shard in self.shards]
        top = merge_topk(parts, ids, self.cfg.topk)
        for shard in self.shards:
            shard.record(ids, top)
        return top

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch in every shard and plan the next; returns the Fig. 3 metrics."""
        stats = PlanStats()
        for shard in self.shards:
            stats = stats + shard.end_epoch()
        return stats.metrics()

    def partner_plan(self) -> torch.Tensor:
        """(N,) partner id of every image for the running epoch."""
        return torch.cat([shard.partners for shard in self.shards])

    def state_dict(self) -> dict[str, object]:
        return {"shards": [shard.state_dict() for shard in self.shards]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        saved = state["shards"]
        if len(saved) != len(self.shards):  # type: ignore[arg-type]
            raise ValueError(f"state has {len(saved)} shards, this run has {len(self.shards)}")  # type: ignore[arg-type]
        for shard, shard_state in zip(self.shards, saved, strict=True):  # type: ignore[call-overload]
            shard.load_state_dict(shard_state)
