"""What a run asks Ray for, as resource bundles, and whether they fit a cluster's nodes.

One list of bundles (:func:`run_bundles`) is the answer for ``adasim-ray check`` (placed
first-fit on the nodes, :func:`place`) and for a sweep (its totals are what one trial
reserves, ``adasim_ray.sweep.tuner.trial_resources``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

# Slack for sums of fractional resources (0.25 GPU x 4 must fit 1 GPU).
_EPS = 1e-9


@dataclass
class Node:
    """Free resources of one node while the run's bundles are being placed."""

    name: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Bundle:
    """One resource request of the run: a Train worker, a cache shard actor, a fetch task."""

    what: str
    cpus: float
    gpus: float


def run_bundles(cfg: Any) -> list[Bundle]:
    """What ``adasim_ray.train.run.pretrain`` asks Ray for, in the order it asks: the cache
    shard actors first, then the Train workers, then the Ray Data fetch tasks of every rank.

    With ``ray.num_workers=0`` the training loop runs in the driver process (or in a sweep
    trial's function, which reserves no CPU), outside any Ray reservation; it still keeps
    ``ray.cpus_per_worker`` CPUs (and its GPUs, with ``ray.use_gpu``) of its machine busy, so
    it is counted as one bundle of a worker's size.

    Examples:
        >>> from types import SimpleNamespace
        >>> ray = SimpleNamespace(cache_shards=1, cache_shard_cpus=0.0, cache_shard_gpus=0.0,
        ...     num_workers=0, cpus_per_worker=2.0, use_gpu=False, gpus_per_worker=1.0,
        ...     fetch_actors=1,
        ...     fetch_cpus=0.5)
        >>> [b.what for b in run_bundles(SimpleNamespace(ray=ray))]
        ['cache shard', 'training loop (driver)', 'fetch task']
    """
    r = cfg.ray
    gpus = r.gpus_per_worker if r.use_gpu else 0.0
    bundles = [Bundle("cache shard", r.cache_shard_cpus, r.cache_shard_gpus)] * r.cache_shards
    if r.num_workers == 0:
        bundles.append(Bundle("training loop (driver)", r.cpus_per_worker, gpus))
    bundles += [Bundle("Train worker", r.cpus_per_worker, gpus)] * r.num_workers
    bundles += [Bundle("fetch task", r.fetch_cpus, 0.0)] * (max(r.num_workers, 1) * r.fetch_actors)
    return bundles


def place(nodes: list[Node], bundles: list[Bundle]) -> list[Bundle]:
    """First-fit placement of ``bundles`` on copies of ``nodes``; returns those that fit
    nowhere (empty: the run fits)."""
    free = [Node(n.name, n.cpus, n.gpus) for n in nodes]
    unplaced = []
    for b in bundles:
        for node in free:
            if node.cpus + _EPS >= b.cpus and node.gpus + _EPS >= b.gpus:
                node.cpus -= b.cpus
                node.gpus -= b.gpus
                break
        else:
            unplaced.append(b)
    return unplaced


def counted(bundles: list[Bundle]) -> str:
    """The bundles grouped, for one line: ``2 Train workers x (4 CPU + 1 GPU), ...``."""
    counts: dict[Bundle, int] = {}
    for b in bundles:
        counts[b] = counts.get(b, 0) + 1
    parts = []
    for b, n in counts.items():
        gpus = f" + {b.gpus:g} GPU" if b.gpus else ""
        parts.append(f"{n} {b.what}{'s' if n > 1 else ''} x ({b.cpus:g} CPU{gpus})")
    return ", ".join(parts) or "nothing"


def totals(items: list[Node] | list[Bundle]) -> tuple[float, float]:
    """(CPUs, GPUs) of nodes or bundles, summed."""
    return sum(i.cpus for i in items), sum(i.gpus for i in items)


def check_fit(nodes: list[Node], bundles: list[Bundle], where: str) -> dict[str, Any]:
    """The verdict of placing ``bundles`` on ``nodes`` (called ``where``), as JSON-ready
    figures: what is available, what is needed, and what is left over."""
    unplaced = place(nodes, bundles)
    cpus, gpus = totals(nodes)
    need_cpus, need_gpus = totals(bundles)
    return {
        "where": where,
        "nodes": [asdict(n) for n in nodes],
        "available": {"CPU": cpus, "GPU": gpus},
        "needed": {"CPU": need_cpus, "GPU": need_gpus},
        "fits": not unplaced,
        "unplaced": counted(unplaced) if unplaced else None,
    }


def local_nodes() -> list[Node]:
    """This machine, as a local Ray started by ``adasim-ray pretrain`` would see it."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:
        gpus = 0
    return [Node("this machine", float(cpus or 1), float(gpus))]


def ray_nodes(address: str) -> list[Node]:
    """The alive nodes of a running Ray cluster and their total resources."""
    import ray

    joined = not ray.is_initialized()
    if joined:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        return cluster_nodes()
    finally:
        if joined:
            ray.shutdown()


def shortfall(cfg: Any, nodes: list[Node]) -> str | None:
    """One line naming the config field when the run's bundles cannot all be placed on
    ``nodes`` (e.g. ``ray.cpus_per_worker: 2 Train workers x 2 CPUs = 4, this cluster has
    2``), else None. The field named is the largest request of the resource that runs short.

    Examples:
        >>> from types import SimpleNamespace
        >>> ray = SimpleNamespace(cache_shards=1, cache_shard_cpus=0.0, cache_shard_gpus=0.0,
        ...     num_workers=2, cpus_per_worker=2.0, use_gpu=False, gpus_per_worker=1.0,
        ...     fetch_actors=2, fetch_cpus=0.0)
        >>> shortfall(SimpleNamespace(ray=ray), [Node("laptop", 2.0, 0.0)])
        'ray.cpus_per_worker: 2 Train workers x 2 CPUs = 4, this cluster has 2 CPUs'
    """
    bundles = run_bundles(cfg)
    unplaced = place(nodes, bundles)
    if not unplaced:
        return None
    r = cfg.ray
    workers = max(r.num_workers, 1)
    who = "Train worker" if r.num_workers else "training loop (driver)"
    worker_gpus = r.gpus_per_worker if r.use_gpu else 0.0
    largest_cpus = max((n.cpus for n in nodes), default=0.0)
    largest_gpus = max((n.gpus for n in nodes), default=0.0)
    if r.cpus_per_worker > largest_cpus + _EPS:
        return (f"ray.cpus_per_worker: a {who} asks {r.cpus_per_worker:g} CPUs, the largest "
                f"node has {largest_cpus:g}")
    if worker_gpus > largest_gpus + _EPS:
        field = "ray.use_gpu" if largest_gpus == 0 else "ray.gpus_per_worker"
        return (f"{field}: a {who} asks {worker_gpus:g} GPU, the largest node has "
                f"{largest_gpus:g}")
    have_cpus, have_gpus = totals(nodes)
    need_cpus, need_gpus = totals(bundles)
    fetches = workers * r.fetch_actors
    for kind, need, have, parts in (
        ("CPUs", need_cpus, have_cpus, [
            ("ray.cpus_per_worker", f"{who}s", workers, r.cpus_per_worker),
            ("ray.cache_shard_cpus", "cache shards", r.cache_shards, r.cache_shard_cpus),
            ("ray.fetch_cpus", "fetch tasks", fetches, r.fetch_cpus)]),
        ("GPUs", need_gpus, have_gpus, [
            ("ray.gpus_per_worker", f"{who}s", workers, worker_gpus),
            ("ray.cache_shard_gpus", "cache shards", r.cache_shards, r.cache_shard_gpus)]),
    ):
        if need <= have + _EPS:
            continue
        field, what, count, each = max(parts, key=lambda p: p[2] * p[3])
        rest = need - count * each
        others = f" (+ {rest:g} for the rest of the run)" if rest > _EPS else ""
        return (f"{field}: {count} {what} x {each:g} {kind} = {count * each:g}{others}, "
                f"this cluster has {have:g} {kind}")
    return (f"resources: the run's requests fit the cluster's totals but not node by node: "
            f"{counted(unplaced)} left over")


def cluster_nodes() -> list[Node]:
    """The alive nodes of the Ray this process is connected to, with their total resources."""
    import ray

    return [Node(n.get("NodeName") or n["NodeManagerAddress"],
                 float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]
