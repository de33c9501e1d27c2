"""The similarity cache and window as Ray actors: S shards, each owning a contiguous id range.

Each :class:`CacheShardActor` wraps one engine :class:`BootstrapShard` (cache rows Z, window,
partners of its images), on a GPU when the actor is given one. :class:`ShardedCache` is the
client that rank 0 of the training job drives: it sends each global batch to every shard, merges
the local top-K answers and sends each image's global top-K to its owner, all off the training
step's critical path (the step never waits for the cache: the partner plan of the running epoch
is fixed when the epoch starts).
"""

from __future__ import annotations

import collections
import os
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from adasim_ray.engine import BootstrapConfig, BootstrapShard, PlanStats, TopK, merge_topk
from adasim_ray.engine.shard import shard_ranges
from adasim_ray.figures.neighbours import Support, pick_queries, spread_by_p_other, supports
from adasim_ray.rundir.checkpoint import load_state_file, save_state_file, shard_file
from adasim_ray.rundir.layout import join


class ShardLostError(RuntimeError):
    """A shard actor restarted by Ray after its process died: its cache and window are empty
    until rank 0 restores them from the checkpoint (``load_state``) or starts over (``reset``).
    Answering from an empty cache would silently change the run, so it refuses instead."""


class CacheShardActor:
    """One shard of the bootstrapping state (use through :class:`ShardedCache`).

    A restarted actor (Ray re-runs ``__init__``) is *lost*: every call but ``ping``, ``stats``,
    ``reset`` and ``load_state`` raises :class:`ShardLostError` until it is restored.
    """

    def __init__(
        self,
        num_images: int,
        start: int,
        stop: int,
        dim: int,
        cfg: dict[str, Any],
        seed: int,
        epochs: int,
        labels: np.ndarray | None,
        shards: int = 1,
    ) -> None:
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        # As many torch threads as CPUs reserved (at least one): an actor with 0 CPUs that
        # spins an OpenMP team on every query steals the training step's cores.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
        torch.set_num_threads(max(1, int(cpus)))
        # The epoch's plan runs while every Train worker waits for it: it may use this node's
        # cores, shared with the run's other shards (assumed on the same node, at worst).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.plan_threads = max(1, int(cpus), cores // max(1, shards))
        self._args = (num_images, start, stop, dim, BootstrapConfig(**cfg))
        self._kwargs = {
            "seed": seed,
            "epochs": epochs,
            "device": device,
            "labels": None if labels is None else torch.tensor(labels),
        }
        self.shard = BootstrapShard(*self._args, **self._kwargs)  # type: ignore[arg-type]
        self.busy_s = 0.0
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            self.lost = ray.get_runtime_context().was_current_actor_reconstructed

    def _check(self) -> None:
        if self.lost:
            lo, hi = self._args[1], self._args[2]
            raise ShardLostError(
                f"cache shard for images [{lo}, {hi}) was restarted and is empty: "
                "restore it from the last checkpoint"
            )

    def ping(self) -> str:
        return str(self.shard.cache.device)

    def reset(self) -> None:
        """Back to an empty cache and window (a run that starts with no checkpoint)."""
        self.shard = BootstrapShard(*self._args, **self._kwargs)  # type: ignore[arg-type]
        self.lost = False

    def query_and_write(self, ids: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        t0 = time.perf_counter()
        top = self.shard.query_and_write(torch.tensor(ids), torch.tensor(feats))
        self.busy_s += time.perf_counter() - t0
        return top.sims.numpy(), top.ids.numpy()

    def step(self, ids: np.ndarray, feats: np.ndarray) -> None:
        """Query, write and record in one call: the whole step when this is the only shard."""
        self._check()
        t0 = time.perf_counter()
        ids_t = torch.tensor(ids)
        top = self.shard.query_and_write(ids_t, torch.tensor(feats))
        self.shard.record(ids_t, top)
        self.busy_s += time.perf_counter() - t0

    def record(self, ids: np.ndarray, sims: np.ndarray, nbr_ids: np.ndarray) -> None:
        self._check()
        self.shard.record(torch.tensor(ids), TopK(torch.tensor(sims), torch.tensor(nbr_ids)))

    def end_epoch(self) -> dict[str, int]:
        self._check()
        return self.shard.end_epoch(self.plan_threads).__dict__.copy()

    def partners(self) -> np.ndarray:
        self._check()
        return self.shard.partners.numpy()

    def epochs_closed(self) -> int:
        return self.shard.epochs_closed

    def state(self) -> dict[str, Any]:
        self._check()
        return self.shard.state_dict()

    def load_state(self, state: dict[str, Any]) -> None:
        self.shard.load_state_dict(state)
        self.lost = False

    def save(self, uri: str) -> int:
        """Write this shard's state to ``uri`` (the run's storage) itself; returns its size."""
        self._check()
        return save_state_file(self.shard.state_dict(), uri)

    def load(self, uri: str) -> None:
        """Restore this shard from the file :meth:`save` wrote, read here."""
        self.load_state(load_state_file(uri))

    def stats(self) -> dict[str, float]:
        return {"busy_s": self.busy_s, "nbytes": self.shard.nbytes()}

    def neighbour_supports(self, count: int, tau: float) -> list[Support]:
        """Fig. 1 of this shard's images: ``count`` queries spread over p(other), with their
        supports and partner probabilities (``figures.neighbours``)."""
        self._check()
        window = self.shard.window
        return supports([window], pick_queries([window], tau, count), tau)


def shard_actor_name(run_name: str, index: int) -> str:
    return f"adasim-cache-{run_name}-{index}"


def create_shard_actors(
    run_name: str,
    num_images: int,
    dim: int,
    cfg: BootstrapConfig,
    shards: int,
    *,
    seed: int,
    epochs: int,
    labels: np.ndarray | None,
    num_cpus: float = 0.0,
    num_gpus: float = 0.0,
    memory: int = 0,
    node_ids: list[str | None] | None = None,
    accelerator_type: str | None = None,
) -> list[ray.actor.ActorHandle]:
    """Start the S shard actors of a run (named, so that Train workers can find them).

    They are restarted by Ray if their process dies (empty and refusing calls, see
    :class:`ShardLostError`: the failed step restarts the Train workers, whose rank 0 restores
    the shards from the last checkpoint). Shard s goes to ``node_ids[s]`` (a preference: a
    restarted shard whose node is gone goes elsewhere), else Ray spreads them over nodes;
    each reserves ``memory`` bytes of Ray's ``memory`` resource (its window and cache).
    """
    remote = ray.remote(CacheShardActor)
    handles = []
    for s, (lo, hi) in enumerate(shard_ranges(num_images, shards)):
        node = node_ids[s] if node_ids else None
        options = remote.options(
            name=shard_actor_name(run_name, s),
            get_if_exists=True,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            memory=memory or None,
            accelerator_type=accelerator_type,
            max_restarts=-1,
            max_task_retries=0,
            scheduling_strategy=("SPREAD" if node is None
                                 else NodeAffinitySchedulingStrategy(node, soft=True)),
        )
        handles.append(
            options.remote(num_images, lo, hi, dim, asdict(cfg), seed, epochs, labels, shards)
        )
    ray.get([h.ping.remote() for h in handles])
    return handles


class ShardedCache:
    """Client of the shard actors, used by rank 0 of the training job.

    ``submit`` returns at once; at most ``max_in_flight`` steps are pending (backpressure).
    Calls to one actor run in the order they were sent, so the query of batch t + 1 always
    sees the rows written by batch t.
    """

    def __init__(self, handles: list[ray.actor.ActorHandle], topk: int, max_in_flight: int = 8):
        self.handles, self.topk, self.max_in_flight = handles, topk, max_in_flight
        self._pending: collections.deque[tuple[np.ndarray, list[ray.ObjectRef]]] = (
            collections.deque()
        )
        self._records: list[ray.ObjectRef] = []

    @classmethod
    def by_name(cls, run_name: str, shards: int, topk: int) -> ShardedCache:
        return cls([ray.get_actor(shard_actor_name(run_name, s)) for s in range(shards)], topk)

    def submit(self, ids: np.ndarray, feats: np.ndarray) -> None:
        """Send one global batch (ids (B,), teacher features (B, d))."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if len(self.handles) == 1:
            self._pending.append((ids, [self.handles[0].step.remote(ids, feats)]))
        else:
            refs = [h.query_and_write.remote(ids, feats) for h in self.handles]
            self._pending.append((ids, refs))
        while len(self._pending) > self.max_in_flight:
            self._complete_oldest()
        # Answers already back are read now (never waited for): a shard that failed, e.g. a
        # restarted one refusing calls, stops the run within a step or two, not at epoch end.
        while self._pending and all(_ready(r) for r in self._pending[0][1]):
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        ids, refs = self._pending.popleft()
        answers = ray.get(refs)
        if len(self.handles) == 1:
            return
        parts = [TopK(torch.tensor(s), torch.tensor(i)) for s, i in answers]
        top = merge_topk(parts, torch.tensor(ids), self.topk)
        sims, nbrs = top.sims.numpy(), top.ids.numpy()
        self._records = [r for r in self._records if not _ready(r)]
        self._records += [h.record.remote(ids, sims, nbrs) for h in self.handles]

    def flush(self) -> None:
        """Wait until every submitted batch is queried, written and recorded."""
        while self._pending:
            self._complete_oldest()
        ray.get(self._records)
        self._records = []

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch in every shard and plan the next; the Fig. 3 metrics of the plan."""
        self.flush()
        stats = PlanStats()
        for counts in ray.get([h.end_epoch.remote() for h in self.handles]):
            stats = stats + PlanStats(**counts)
        return stats.metrics()

    def partners(self) -> np.ndarray:
        """(N,) partner of every image for the running epoch."""
        return np.concatenate(ray.get([h.partners.remote() for h in self.handles]))

    def epochs_closed(self) -> int:
        return int(ray.get(self.handles[0].epochs_closed.remote()))

    def states(self) -> list[dict[str, Any]]:
        self.flush()
        return ray.get([h.state.remote() for h in self.handles])

    def save_files(self, run_dir: str, epoch: int, save_id: str) -> list[tuple[str, int]]:
        """Each shard writes its own file into the run directory, in parallel; returns
        (path relative to the run directory, size) per shard."""
        self.flush()
        paths = [shard_file(epoch, s, save_id) for s in range(len(self.handles))]
        sizes = ray.get([h.save.remote(join(run_dir, p))
                         for h, p in zip(self.handles, paths, strict=True)])
        return list(zip(paths, sizes, strict=True))

    def load_files(self, uris: list[str]) -> None:
        """Each shard reads its own file back (:meth:`save_files`)."""
        if len(uris) != len(self.handles):
            raise ValueError(
                f"the checkpoint has {len(uris)} cache shards, this run has {len(self.handles)}"
            )
        ray.get([h.load.remote(uri) for h, uri in zip(self.handles, uris, strict=True)])

    def load_states(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.handles):
            raise ValueError(
                f"the checkpoint has {len(states)} cache shards, this run has {len(self.handles)}"
            )
        ray.get([h.load_state.remote(s) for h, s in zip(self.handles, states, strict=True)])

    def reset(self) -> None:
        ray.get([h.reset.remote() for h in self.handles])

    def neighbour_supports(self, count: int, tau: float) -> list[Support]:
        """Fig. 1 over all shards: ``count`` queries spread over p(other), from the
        candidates each shard picks among its own images."""
        self.flush()
        found = ray.get([h.neighbour_supports.remote(count, tau) for h in self.handles])
        return spread_by_p_other([s for part in found for s in part], count)

    def busy_seconds(self) -> float:
        return float(sum(s["busy_s"] for s in ray.get([h.stats.remote() for h in self.handles])))


def _ready(ref: ray.ObjectRef) -> bool:
    done, _ = ray.wait([ref], timeout=0)
    return bool(done)
