"""What a run asks Ray for, as resource bundles, and whether they fit a cluster's nodes.

One list of bundles (:func:`run_bundles`) is the answer for ``adasim-ray check`` (placed
first-fit on the nodes, :func:`assign`) and for a sweep (its totals are what one trial
reserves, ``adasim_ray.sweep.tuner.trial_resources``). The Train workers come first: the
cache shards are placed in what the workers leave (``check`` shows where; the driver pins
each shard actor to that node, :func:`shard_nodes`), so that a shard never takes a GPU slice
or the CPUs a worker needs, which would leave the worker group unplaceable: a hang.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

# Slack for sums of fractional resources (0.25 GPU x 4 must fit 1 GPU).
_EPS = 1e-9


@dataclass
class Node:
    """Free resources of one node while the run's bundles are being placed; ``memory`` in
    bytes (None: not known, not checked), ``node_id`` Ray's id of a live node."""

    name: str
    cpus: float
    gpus: float
    memory: float | None = None
    node_id: str | None = None
    accelerators: frozenset[str] = frozenset()  # Ray's accelerator types here, e.g. A100


@dataclass(frozen=True)
class Bundle:
    """One resource request of the run: a Train worker, a cache shard actor, a fetch task;
    ``memory``: the bytes of RAM it holds where that is known and large (a cache shard)."""

    what: str
    cpus: float
    gpus: float
    memory: float = 0.0
    accelerator: str | None = None  # only on a node with this accelerator type


def run_bundles(cfg: Any, shard_memory: float = 0.0) -> list[Bundle]:
    """What ``adasim_ray.train.run.pretrain`` asks Ray for, in the order it is placed: the
    Train workers first, then the cache shard actors (``shard_memory`` bytes of RAM each),
    then the Ray Data fetch tasks of every rank.

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
        ['training loop (driver)', 'cache shard', 'fetch task']
    """
    r = cfg.ray
    gpus = r.gpus_per_worker if r.use_gpu else 0.0
    bundles = []
    kind = getattr(r, "accelerator_type", None) if gpus else None
    shard_kind = getattr(r, "cache_shard_accelerator_type", None) if r.cache_shard_gpus else None
    if r.num_workers == 0:
        bundles.append(Bundle("training loop (driver)", r.cpus_per_worker, gpus, 0.0, kind))
    bundles += [Bundle("Train worker", r.cpus_per_worker, gpus, 0.0, kind)] * r.num_workers
    bundles += [Bundle("cache shard", r.cache_shard_cpus, r.cache_shard_gpus,
                       float(shard_memory), shard_kind)] * r.cache_shards
    bundles += [Bundle("fetch task", r.fetch_cpus, 0.0)] * (max(r.num_workers, 1) * r.fetch_actors)
    return bundles


def _fits(node: Node, b: Bundle) -> bool:
    return (node.cpus + _EPS >= b.cpus and node.gpus + _EPS >= b.gpus
            and (node.memory is None or node.memory + _EPS >= b.memory)
            and (b.accelerator is None or b.accelerator in node.accelerators))


#: Ray's resource that marks a node's GPU type: ``accelerator_type:A100``.
ACCELERATOR_PREFIX = "accelerator_type:"


def accelerators_of(resources: dict[str, Any]) -> frozenset[str]:
    """The accelerator types named among a node's resources.

    Examples:
        >>> sorted(accelerators_of({"CPU": 8, "accelerator_type:A100": 1}))
        ['A100']
    """
    return frozenset(k[len(ACCELERATOR_PREFIX):] for k in resources
                     if k.startswith(ACCELERATOR_PREFIX))


def assign(nodes: list[Node], bundles: list[Bundle]) -> list[Node | None]:
    """First-fit placement of ``bundles``, in order, on copies of ``nodes``: the node each
    goes to (its original), None for one that fits nowhere.

    Examples:
        >>> gpu, cpu = Node("gpu", 8, 8), Node("cpu", 16, 0, memory=64e9)
        >>> bundles = [Bundle("Train worker", 1, 1)] * 8 + [Bundle("cache shard", 1, 0, 8e9)]
        >>> [n.name for n in assign([gpu, cpu], bundles)][-2:]  # the shard after the workers
        ['gpu', 'cpu']
    """
    free = [Node(n.name, n.cpus, n.gpus, n.memory, n.node_id, n.accelerators) for n in nodes]
    where: list[Node | None] = []
    for b in bundles:
        for k, node in enumerate(free):
            if _fits(node, b):
                node.cpus -= b.cpus
                node.gpus -= b.gpus
                if node.memory is not None:
                    node.memory -= b.memory
                where.append(nodes[k])
                break
        else:
            where.append(None)
    return where


def place(nodes: list[Node], bundles: list[Bundle]) -> list[Bundle]:
    """First-fit placement of ``bundles`` on copies of ``nodes``; returns those that fit
    nowhere (empty: the run fits)."""
    return [b for b, node in zip(bundles, assign(nodes, bundles), strict=True) if node is None]


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
        "nodes": [asdict(n) | {"accelerators": sorted(n.accelerators)} for n in nodes],
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
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    memory = float(pages * os.sysconf("SC_PAGE_SIZE")) if pages > 0 else None
    return [Node("this machine", float(cpus or 1), float(gpus), memory)]


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
                 float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)),
                 float(n["Resources"]["memory"]) if "memory" in n["Resources"] else None,
                 n.get("NodeID"), accelerators_of(n["Resources"]))
            for n in ray.nodes() if n.get("Alive")]


def free_nodes() -> list[Node]:
    """The alive nodes of the Ray this process is connected to, with what is free on each
    now (Ray's per-node available resources; the totals where Ray cannot say)."""
    nodes = cluster_nodes()
    try:
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
    except Exception:  # noqa: BLE001 - a Ray without this view: judge by the totals
        return nodes
    for node in nodes:
        have = free.get(node.node_id or "")
        if have is not None:
            node.cpus, node.gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
            node.memory = float(have["memory"]) if "memory" in have else node.memory
    return nodes


def shard_nodes(cfg: Any, nodes: list[Node], shard_memory: float = 0.0) -> list[Node | None]:
    """Where each cache shard goes when the run's Train workers are placed first on
    ``nodes`` (what is free now, :func:`free_nodes`): a node per shard, or None where a
    shard does not fit beside the workers."""
    bundles = run_bundles(cfg, shard_memory)
    where = assign(nodes, bundles)
    return [n for b, n in zip(bundles, where, strict=True) if b.what == "cache shard"]
