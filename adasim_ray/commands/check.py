"""``adasim-ray check``: everything a run needs, checked before any training starts.

    adasim-ray check [--config YAML] [--data SPEC] [--set key=value ...] [--output DIR]
                    [--cluster CLUSTER_YAML] [--json]

1. the config loads; the run's pre-flight (:mod:`adasim_ray.preflight`, which ``pretrain``
   raises the first finding of): the training data set and its size N, the config against
   N and the labels, the evaluation splits and their labels, the method built on the meta
   device and its checkpoint size;
2. (with ``--num-images N``, nothing is opened: the pre-flight plans for N RGB images);
3. the memory of the bootstrapping state per cache shard, from the engine's storage layout
   (:mod:`adasim_ray.resources.memory`, which tabulates it);
4. the resources: the Train workers, the cache shard actors and the fetch tasks are placed
   first-fit (:mod:`adasim_ray.resources.placement`) on the nodes of a running Ray
   (``ray.address`` or RAY_ADDRESS), of a cluster YAML at its autoscaling maximum
   (``--cluster``, default ``~/ray_bootstrap_config.yaml``, which ``ray up`` leaves on the
   head node; the YAML is validated as ``ray up`` would, offline:
   :mod:`adasim_ray.resources.cluster_yaml`), or of this machine;
5. the storage (``ray.storage_path``, else ``--output``) is writable: a probe file is written
   and deleted through pyarrow's file systems, as the run's own files are
   (:mod:`adasim_ray.resources.storage`).

Exit code 0 when all is well, 2 otherwise with one ``error:`` line per problem on stderr.
With ``--json`` the last line on stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adasim_ray.commands.args import (
    config_overrides,
    config_path,
)
from adasim_ray.config import load_config
from adasim_ray.data import describe
from adasim_ray.engine.cache import QUERY_CHUNK_ROWS
from adasim_ray.errors import ConfigError, UserError, first_line
from adasim_ray.preflight import EVAL_ROLES, preflight, recipe_line
from adasim_ray.recipe import make_views
from adasim_ray.resources.cluster_yaml import BOOTSTRAP_CONFIG, cluster_yaml_nodes
from adasim_ray.resources.memory import (
    bootstrap_memory,
    feature_dim,
    human_bytes,
    query_block_bytes,
    shard_ram_bytes,
)
from adasim_ray.resources.placement import (
    Bundle,
    assign,
    check_fit,
    counted,
    local_nodes,
    ray_nodes,
    run_bundles,
    shortfall,
)
from adasim_ray.resources.query_cost import (
    CPU_QUERY_GFLOPS_PER_CORE,
    cpu_query_seconds,
    query_gflop_per_step,
    recommended_shards,
)
from adasim_ray.resources.storage import probe_storage


def run_check(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path, config_overrides(args))  # a bad field ends here, in one line
    print(f"[check] config: {path} is valid (method {cfg.method}, backbone {cfg.backbone})")
    report: dict[str, Any] = {"config": path, "data": cfg.data}
    planned = None
    if args.num_images is not None:
        if args.num_images < 1:
            raise UserError(f"--num-images must be >= 1, got {args.num_images}")
        planned = PlannedImages(args.num_images)
    found = preflight(cfg, source=planned)  # what a run checks first, every finding kept
    problems = [f.message for f in found.findings]
    source = found.source
    if source is not None:
        report["num_images"] = len(source)
        report["image_size"] = found.views.size if found.views is not None else None
    if planned is not None:
        print(f"[check] data: not opened; planned for {args.num_images} RGB images "
              f"(--num-images), views of {report['image_size']} px")
    elif source is not None:
        print(f"[check] data: train on {describe(source)}; views of {report['image_size']} px")
    for split, sample in found.eval_sources.items():
        report[f"eval_{split}_images"] = len(sample)
        print(f"[check] eval data ({EVAL_ROLES[split]}): {describe(sample)}")
    if found.no_eval is not None:
        report["knn"] = False
        print(f"[check] {found.no_eval}")
    if found.views is not None:
        workers = max(cfg.ray.num_workers, 1)
        per = "GPU" if cfg.ray.use_gpu else "worker"
        report["batch_per_worker"] = cfg.batch_size // workers
        print(f"[check] recipe: {recipe_line(cfg, found)}; {cfg.batch_size // workers} images "
              f"per {per} and step")
    if found.state_bytes is not None:
        report["method_state_bytes"] = found.state_bytes
        print(f"[check] method: {cfg.method} builds; its state in a checkpoint (networks and "
              f"optimiser) about {human_bytes(found.state_bytes)}")
    shard_ram = _check_memory(cfg, source, report, problems, args.shard_budget_gb * 1e9)
    _check_resources(cfg, args.cluster, report, problems, shard_ram)
    _check_storage(cfg.ray.storage_path or args.output, report, problems)

    report["problems"] = problems
    report["ok"] = not problems
    print(f"[check] {'OK' if not problems else f'{len(problems)} problem(s)'}")
    sys.stdout.flush()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0 if not problems else 2


@dataclass(frozen=True)
class PlannedImages:
    """A data set planned for and not opened (``--num-images``): N RGB images of varied
    sizes with ImageNet's statistics, what the views and the backbone are sized from."""

    n: int
    channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    native_size: int | None = None
    mirror_invariant: bool = True
    labels: Any = None

    def __len__(self) -> int:
        return self.n


def _check_memory(cfg: Any, source: Any, report: dict[str, Any], problems: list[str],
                  budget: float) -> float:
    """The bootstrapping state per shard, the shard count that keeps each within ``budget``
    bytes, and the cache's query work per step; returns the RAM of the largest shard."""
    if source is None:
        print("[check] memory: unknown without the data set's size N")
        return 0.0
    try:
        dim = feature_dim(cfg, make_views(cfg, source))
        mem = report["memory"] = bootstrap_memory(cfg, len(source), dim)
    except (ValueError, ConfigError) as err:
        problems.append(f"memory: {first_line(err)}")
        return 0.0
    s, a = mem["per_shard"], cfg.adasim
    print(
        f"[check] cache feature d={dim} ({cfg.backbone}), Z in {a.cache_dtype} "
        f"(in {mem['cache_on']}), window w={a.window} x K={a.topk} ({a.sim_dtype})"
    )
    print(
        f"[check] memory per shard (largest of {mem['shards']}, {s['images']} images): "
        f"cache {human_bytes(s['cache'])} + written {human_bytes(s['written'])}, "
        f"window {human_bytes(s['window'])} + seen {human_bytes(s['seen'])}, "
        f"partners {human_bytes(s['partners'])} = {human_bytes(s['total'])} "
        f"({s['total']} bytes); all shards {human_bytes(mem['all_shards'])}"
    )
    n, shards = len(source), cfg.ray.cache_shards
    need = recommended_shards(cfg, n, dim, budget)
    ram = float(shard_ram_bytes(cfg, n, dim))
    block = query_block_bytes(cfg, n)
    print(f"[check] query block per shard: {cfg.batch_size} anchors x "
          f"{min(s['images'], QUERY_CHUNK_ROWS)} cache rows x 4 bytes = {human_bytes(block)} "
          f"(in {mem['cache_on']}, while a step's query runs)")
    verdict = ("within it" if need <= shards else
               f"over it: use --set ray.cache_shards={need} (or more)")
    print(f"[check] shards: {shards}, the largest {human_bytes(s['total'])} "
          f"({human_bytes(ram)} of RAM in all, its query block included on a CPU); "
          f"budget {human_bytes(budget)} per shard: "
          f"{verdict}; recommended ray.cache_shards >= {need}")
    gflop = query_gflop_per_step(cfg, n, dim)
    seconds = cpu_query_seconds(cfg, n, dim)
    cores = max(1.0, float(cfg.ray.cache_shard_cpus))
    on_cpu = (f"{seconds:.3g} s per step on {cores:g} CPU core(s) at the measured "
              f"{CPU_QUERY_GFLOPS_PER_CORE:.0f} GFLOP/s per core (benchmarks/cache_query.py)")
    if cfg.ray.cache_shard_gpus > 0:
        where = (f"on its GPU: not measured yet (benchmarks/gpu_check.py measures it where a "
                 f"GPU is lent); on the CPU it would take {on_cpu}")
    else:
        where = f"{on_cpu}: off the step's path while it stays below the step's own time"
    shown = f"{gflop:,.0f}" if gflop >= 100 else f"{gflop:.3g}"
    print(f"[check] cache query per step: {cfg.batch_size} anchors x {s['images']} rows x "
          f"d={dim} = {shown} GFLOP per shard, {where}")
    report["shards"] = {"count": shards, "recommended": need, "budget_bytes": budget,
                        "query_block_bytes": block,
                        "largest_bytes": s["total"], "largest_ram_bytes": ram,
                        "query_gflop_per_step": gflop, "query_cpu_s_per_step": seconds}
    return ram


def _fit_line(fit: dict[str, Any], bundles: list[Bundle]) -> str:
    have, need = fit["available"], fit["needed"]
    verdict = "fits" if fit["fits"] else f"does NOT fit ({fit['unplaced']} left over)"
    return (
        f"resources of {fit['where']} ({len(fit['nodes'])} node(s), {have['CPU']:g} CPUs, "
        f"{have['GPU']:g} GPUs): the run needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs "
        f"[{counted(bundles)}]: {verdict}"
    )


def _check_resources(
    cfg: Any, cluster_yaml: str | None, report: dict[str, Any], problems: list[str],
    shard_ram: float = 0.0,
) -> None:
    """Place the run on a running Ray (now), on a cluster YAML (at its autoscaling maximum,
    the verdict when known: a cluster starts with its head only), else on this machine: the
    Train workers first, then the cache shards (``shard_ram`` bytes each, against the
    node's memory where it is known) in what they leave, then the fetch tasks."""
    bundles = run_bundles(cfg, shard_ram)
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    explicit = cluster_yaml is not None
    if not explicit and address and Path(BOOTSTRAP_CONFIG).expanduser().is_file():
        cluster_yaml = str(Path(BOOTSTRAP_CONFIG).expanduser())
    fits: list[dict[str, Any]] = []
    verdict_nodes: list[Any] = []
    if address:
        try:
            verdict_nodes = ray_nodes(address)
            fits.append(check_fit(verdict_nodes, bundles, f"the Ray cluster at {address}"))
        except Exception as err:  # connection refused, authentication, timeouts
            problems.append(
                f"ray.address: cannot connect to Ray at {address}: {first_line(err)} "
                "(a cluster with token authentication needs RAY_AUTH_MODE=token and its token)"
            )
    if cluster_yaml is not None:
        try:
            nodes = cluster_yaml_nodes(cluster_yaml)
        except UserError as err:
            if explicit:
                raise  # a bad --cluster argument: the user's input
            problems.append(str(err))
        else:
            verdict_nodes = nodes
            fits.append(check_fit(nodes, bundles, f"{cluster_yaml} at max_workers"))
    if not address and cluster_yaml is None:
        verdict_nodes = local_nodes()
        fits.append(check_fit(verdict_nodes, bundles, "this machine"))
    for fit in fits:
        print(f"[check] {_fit_line(fit, bundles)}")
    if verdict_nodes:
        report["shard_nodes"] = _shard_lines(bundles, verdict_nodes)
    report["resources"] = fits
    verdict = fits[-1] if fits else None
    if verdict is not None and not verdict["fits"]:
        hint = (
            " (an autoscaling cluster may add nodes: judge it with --cluster CLUSTER_YAML)"
            if address and cluster_yaml is None
            else ""
        )
        problems.append(
            f"resources: the run does not fit {verdict['where']}: "
            f"{shortfall(cfg, verdict_nodes)}{hint}"
        )


def _check_storage(storage: str, report: dict[str, Any], problems: list[str]) -> None:
    report["storage"] = {"uri": storage, "writable": False}
    try:
        probe_storage(storage)
    except Exception as err:  # pyarrow raises OSError, ArrowInvalid, ... with the reason
        problems.append(f"storage: cannot write to {storage}: {first_line(err)}")
    else:
        report["storage"]["writable"] = True
        print(f"[check] storage: {storage} is writable (a probe file was written and deleted)")


def _shard_lines(bundles: list[Bundle], nodes: list[Any]) -> list[str | None]:
    """Print where each cache shard goes when the workers are placed first; their nodes."""
    where = [n for b, n in zip(bundles, assign(nodes, bundles), strict=True)
             if b.what == "cache shard"]
    names = [None if n is None else n.name for n in where]
    groups: dict[str | None, list[int]] = {}
    for s, name in enumerate(names):
        groups.setdefault(name, []).append(s)
    parts = []
    for name, shards in groups.items():
        node = next((n for n in nodes if n.name == name), None)
        memory = ("" if node is None or node.memory is None
                  else f" (node memory {human_bytes(node.memory)})")
        label = "nowhere beside the Train workers" if name is None else f"{name}{memory}"
        parts.append(f"shard{'s' if len(shards) > 1 else ''} "
                     f"{', '.join(map(str, shards))} -> {label}")
    print(f"[check] cache shards, placed after the Train workers: {'; '.join(parts)}")
    return names
