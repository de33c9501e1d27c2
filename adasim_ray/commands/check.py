"""``launch.py check``: everything a run needs, checked before any training starts.

    launch.py check [--config YAML] [--data SPEC] [--set key=value ...] [--output DIR]
                    [--cluster CLUSTER_YAML] [--json]

1. the config loads and validates (also against the data set's size N);
2. the training data set is present, and its size N (and the evaluation splits);
3. the memory of the bootstrapping state per cache shard, from the engine's storage layout;
4. the resources: the Train workers, the cache shard actors and the fetch tasks are placed
   first-fit on the nodes of a running Ray (``ray.address`` or RAY_ADDRESS), of a cluster
   YAML at its autoscaling maximum (``--cluster``, default ``~/ray_bootstrap_config.yaml``,
   which ``ray up`` leaves on the head node; the YAML is validated as ``ray up`` would,
   offline), or of this machine;
5. the storage (``ray.storage_path``, else ``--output``) is writable: a probe file is written
   and deleted through pyarrow's file systems, as the run's own files are.

Exit code 0 when all is well, 2 otherwise with one ``error:`` line per problem on stderr.
With ``--json`` the last line on stdout is one JSON object with every figure.

Memory of one shard of N_s images (``adasim_ray.engine``: ``cache.py``, ``window.py``,
``shard.py``), with d the feature dimension written to the cache (the backbone's pooled
feature: 384 for ViT-S/16, 768 for ViT-B/16, 2048 for ResNet-50):

==========  ================================  ============================================
part        bytes                             where
==========  ================================  ============================================
cache Z     N_s x d x (2 fp16/bf16 | 4 fp32)  the shard actor's GPU if it has one, else RAM
written     N_s (bool)                        with Z
window      N_s x w x K x (4 int32 id +       RAM of the shard actor
            2 fp16 | 4 fp32 similarity)
seen        N_s x w (bool)                    RAM
partners    N_s x 8 (int64)                   RAM
==========  ================================  ============================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Bytes per element of the engine's tensors other than Z and the window's similarities
# (whose dtypes come from the config): window ids int32, masks bool, partners int64.
ID_BYTES, MASK_BYTES, PARTNER_BYTES = 4, 1, 8

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written by `ray up` on the head node


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="validate a config, its data, storage and cluster resources, without training",
        description="Check a run before it starts: the config, the data set and its size N, "
        "the memory of the cache and the window per shard, the cluster's resources and the "
        "storage. Exit code 0 when all is well, 2 with one `error:` line per problem.",
    )
    p.add_argument("--config", help="experiment YAML (default: the embedded MNIST demo)")
    p.add_argument("--data", help="data set: mnist | digits | folder:PATH | parquet:PATH")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field by its dotted name, e.g. ray.num_workers=8",
    )
    p.add_argument(
        "--output",
        default="runs",
        help="where run directories go when ray.storage_path is unset (default: runs)",
    )
    p.add_argument(
        "--cluster",
        metavar="CLUSTER_YAML",
        help="judge the resources against this `ray up` YAML at its max_workers "
        f"(default: {BOOTSTRAP_CONFIG} when it exists, i.e. on a `ray up` head node)",
    )
    p.add_argument("--json", action="store_true", help="print every figure as JSON last")
    p.set_defaults(func=run_check)


# -- memory ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardFootprint:
    """Bytes of bootstrapping state held by one shard (see the module docstring)."""

    images: int
    cache: int
    written: int
    window: int
    seen: int
    partners: int

    @property
    def total(self) -> int:
        return self.cache + self.written + self.window + self.seen + self.partners


def _element_size(dtype: Any) -> int:
    import torch

    return torch.empty(0, dtype=dtype).element_size()


def shard_footprint(
    images: int, dim: int, window: int, topk: int, cache_dtype: str, sim_dtype: str
) -> ShardFootprint:
    """Bytes of the cache rows, window and partners of a shard of ``images`` images.

    Examples:
        >>> shard_footprint(1000, 384, 50, 10, "float16", "float16").total
        3827000
    """
    from adasim_ray.engine.cache import CACHE_DTYPES
    from adasim_ray.engine.window import SIM_DTYPES

    z = _element_size(CACHE_DTYPES[cache_dtype])
    sim = _element_size(SIM_DTYPES[sim_dtype])
    return ShardFootprint(
        images=images,
        cache=images * dim * z,
        written=images * MASK_BYTES,
        window=images * window * topk * (ID_BYTES + sim),
        seen=images * window * MASK_BYTES,
        partners=images * PARTNER_BYTES,
    )


def bootstrap_memory(cfg: Any, num_images: int, dim: int) -> dict[str, Any]:
    """Footprint of the largest of the ``ray.cache_shards`` shards, and of all of them."""
    from adasim_ray.engine.shard import shard_ranges

    a = cfg.adasim
    shards = [
        shard_footprint(hi - lo, dim, a.window, a.topk, a.cache_dtype, a.sim_dtype)
        for lo, hi in shard_ranges(num_images, cfg.ray.cache_shards)
    ]
    largest = max(shards, key=lambda s: s.total)
    return {
        "shards": len(shards),
        "feature_dim": dim,
        "cache_on": "GPU" if cfg.ray.cache_shard_gpus > 0 else "RAM",
        "per_shard": asdict(largest) | {"total": largest.total},
        "all_shards": sum(s.total for s in shards),
    }


def human_bytes(n: float) -> str:
    """Decimal units, as the design notes quote sizes (``2.0 GB`` for 1.97e9 bytes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def feature_dim(cfg: Any, views: Any) -> int:
    """The dimension the run writes to the cache: its backbone's pooled feature (built on the
    meta device: no memory, no initialisation cost)."""
    import torch

    from adasim_ray.recipe import build_backbone_for

    try:
        with torch.device("meta"):
            return build_backbone_for(cfg, views)[1]
    except Exception:  # an architecture whose init needs real tensors: build it for real
        return build_backbone_for(cfg, views)[1]


# -- resources -------------------------------------------------------------------------------


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
    shard actors first, then the Train workers, then the Ray Data fetch tasks of every rank."""
    r = cfg.ray
    bundles = [Bundle("cache shard", r.cache_shard_cpus, r.cache_shard_gpus)] * r.cache_shards
    bundles += [Bundle("Train worker", r.cpus_per_worker, 1.0 if r.use_gpu else 0.0)] * (
        r.num_workers  # 0 runs the loop in the driver, which reserves nothing
    )
    bundles += [Bundle("fetch task", r.fetch_cpus, 0.0)] * (max(r.num_workers, 1) * r.fetch_actors)
    return bundles


def place(nodes: list[Node], bundles: list[Bundle]) -> list[Bundle]:
    """First-fit placement of ``bundles`` on copies of ``nodes``; returns those that fit
    nowhere (empty: the run fits)."""
    free = [Node(n.name, n.cpus, n.gpus) for n in nodes]
    unplaced = []
    eps = 1e-9
    for b in bundles:
        for node in free:
            if node.cpus + eps >= b.cpus and node.gpus + eps >= b.gpus:
                node.cpus -= b.cpus
                node.gpus -= b.gpus
                break
        else:
            unplaced.append(b)
    return unplaced


def _counted(bundles: list[Bundle]) -> str:
    counts: dict[Bundle, int] = {}
    for b in bundles:
        counts[b] = counts.get(b, 0) + 1
    parts = []
    for b, n in counts.items():
        gpus = f" + {b.gpus:g} GPU" if b.gpus else ""
        parts.append(f"{n} {b.what}{'s' if n > 1 else ''} x ({b.cpus:g} CPU{gpus})")
    return ", ".join(parts) or "nothing"


def _totals(items: list[Any]) -> tuple[float, float]:
    return sum(i.cpus for i in items), sum(i.gpus for i in items)


def local_nodes() -> list[Node]:
    """This machine, as a local Ray started by ``launch.py pretrain`` would see it."""
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
        return [
            Node(
                n.get("NodeName") or n["NodeManagerAddress"],
                float(n["Resources"].get("CPU", 0)),
                float(n["Resources"].get("GPU", 0)),
            )
            for n in ray.nodes()
            if n.get("Alive")
        ]
    finally:
        if joined:
            ray.shutdown()


def validate_cluster_yaml(path: str | Path) -> dict[str, Any]:
    """Check a ``ray up`` cluster YAML offline, as ``ray up`` does before it calls the cloud:
    Ray's autoscaler schema (``ray/autoscaler/ray-schema.json``, draft-07), then Ray's own
    checks on the config merged with its provider's ``defaults.yaml``. Returns the merged
    config.

    Raises:
        UserError: one line naming the file and the first problem.
    """
    import copy
    import logging

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    from adasim_ray.cli import UserError
    from adasim_ray.configfile import ConfigError, read_yaml

    try:
        data = read_yaml(Path(path).expanduser())
    except ConfigError as err:
        raise UserError(f"--cluster: {err}") from None
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise UserError(f"--cluster: {path}: {where}: {_first_line(error)}")
    util_log = logging.getLogger("ray.autoscaler._private.util")
    level = util_log.level
    util_log.setLevel(logging.WARNING)  # "setting max workers for head node type to 0"
    try:
        merged = prepare_config(copy.deepcopy(data))
        validate_config(merged)
    except Exception as err:  # Ray raises ValueError, RuntimeError, NotImplementedError, ...
        raise UserError(f"--cluster: {path}: {_first_line(err)}") from None
    finally:
        util_log.setLevel(level)
    return merged


def cluster_yaml_nodes(path: str | Path) -> list[Node]:
    """The nodes of a ``ray up`` cluster YAML (validated first) at its autoscaling maximum:
    the head, then each worker type at its ``max_workers`` (within the global one)."""
    from adasim_ray.cli import UserError

    data = validate_cluster_yaml(path)
    types = data["available_node_types"]
    head = data["head_node_type"]
    budget = int(data.get("max_workers", 0))
    nodes = []
    for name in [head, *(t for t in types if t != head)]:
        spec = types[name]
        resources = spec.get("resources")
        if not isinstance(resources, dict) or "CPU" not in resources:
            raise UserError(f"--cluster: node type {name!r} in {path} does not state its resources")
        count = 1 if name == head else min(int(spec.get("max_workers", budget)), budget)
        if name != head:
            budget -= count
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        nodes += [Node(f"{name}[{i}]", cpus, gpus) for i in range(count)]
    return nodes


def check_fit(nodes: list[Node], bundles: list[Bundle], where: str) -> dict[str, Any]:
    unplaced = place(nodes, bundles)
    cpus, gpus = _totals(nodes)
    need_cpus, need_gpus = _totals(bundles)
    return {
        "where": where,
        "nodes": [asdict(n) for n in nodes],
        "available": {"CPU": cpus, "GPU": gpus},
        "needed": {"CPU": need_cpus, "GPU": need_gpus},
        "fits": not unplaced,
        "unplaced": _counted(unplaced) if unplaced else None,
    }


def _fit_line(fit: dict[str, Any], bundles: list[Bundle]) -> str:
    have, need = fit["available"], fit["needed"]
    verdict = "fits" if fit["fits"] else f"does NOT fit ({fit['unplaced']} left over)"
    return (
        f"resources of {fit['where']} ({len(fit['nodes'])} node(s), {have['CPU']:g} CPUs, "
        f"{have['GPU']:g} GPUs): the run needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs "
        f"[{_counted(bundles)}]: {verdict}"
    )


# -- storage ---------------------------------------------------------------------------------


def probe_storage(uri: str) -> None:
    """Write and delete a probe file under ``uri`` (a local path or s3:// gs:// URI), as the
    run's files are written; a local directory that this created is removed again."""
    from adasim_ray.train.rundir import resolve

    fs, path = resolve(uri)
    created = None
    if "://" not in uri:
        first_missing = Path(path)
        while not first_missing.parent.exists() and first_missing.parent != first_missing:
            first_missing = first_missing.parent
        created = None if first_missing.exists() else str(first_missing)
    fs.create_dir(path, recursive=True)
    probe = f"{path.rstrip('/')}/.adasim-check-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(probe) as out:
        out.write(b"adasim-ray storage probe\n")
    fs.delete_file(probe)
    if created is not None:
        fs.delete_dir(created)


# -- the command -----------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _overrides(args: argparse.Namespace) -> list[str]:
    sets = list(args.set or [])
    if args.data is not None:
        sets.append(f"data={args.data}")
    return sets


def run_check(args: argparse.Namespace) -> int:
    from adasim_ray.cli import default_config_path
    from adasim_ray.config import load_config

    config_path = args.config or str(default_config_path())
    cfg = load_config(config_path, _overrides(args))  # a bad field ends here, in one line
    print(f"[check] config: {config_path} is valid (method {cfg.method}, backbone {cfg.backbone})")
    report: dict[str, Any] = {"config": config_path, "data": cfg.data}
    problems: list[str] = []
    source = _check_data(cfg, report, problems)
    _check_memory(cfg, source, report, problems)
    _check_resources(cfg, args.cluster, report, problems)
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


def _check_data(cfg: Any, report: dict[str, Any], problems: list[str]) -> Any:
    """The training split (N, and the checks that need N) and the evaluation splits; returns
    the training source, or None when it cannot be opened."""
    from adasim_ray.config import ConfigError, validate
    from adasim_ray.data import DataError, first_images, open_source
    from adasim_ray.recipe import open_train_source

    source = None
    try:
        source = open_train_source(cfg)
    except DataError as err:
        problems.append(f"data: {_first_line(err)}")
    if source is not None:
        n = report["num_images"] = len(source)
        limit = f" (first {cfg.limit_images} by limit_images)" if cfg.limit_images else ""
        print(f"[check] data: {cfg.data} train split, N={n} images{limit}")
        try:
            validate(cfg, n, labelled=source.labels is not None)
        except ConfigError as err:
            problems.append(_first_line(err))
    eval_spec = cfg.eval_data or cfg.data
    for split, limit_n in (("train", cfg.eval.max_train), ("test", cfg.eval.max_test)):
        if cfg.eval_data is None and (split == "train" or source is None):
            continue  # the training split (checked above) or its data set, already reported
        try:
            count = len(first_images(open_source(eval_spec, split), limit_n))
        except DataError as err:
            problems.append(f"eval data ({split} split): {_first_line(err)}")
            continue
        report[f"eval_{split}_images"] = count
        print(f"[check] eval data: {eval_spec} {split} split, {count} images")
    return source


def _check_memory(cfg: Any, source: Any, report: dict[str, Any], problems: list[str]) -> None:
    from adasim_ray.config import ConfigError
    from adasim_ray.recipe import make_views

    if source is None:
        print("[check] memory: unknown without the data set's size N")
        return
    try:
        dim = feature_dim(cfg, make_views(cfg, source))
        mem = report["memory"] = bootstrap_memory(cfg, len(source), dim)
    except (ValueError, ConfigError) as err:
        problems.append(f"memory: {_first_line(err)}")
        return
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


def _check_resources(
    cfg: Any, cluster_yaml: str | None, report: dict[str, Any], problems: list[str]
) -> None:
    """Place the run on a running Ray (now), on a cluster YAML (at its autoscaling maximum,
    the verdict when known: a cluster starts with its head only), else on this machine."""
    from adasim_ray.cli import UserError

    bundles = run_bundles(cfg)
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    explicit = cluster_yaml is not None
    if not explicit and address and Path(BOOTSTRAP_CONFIG).expanduser().is_file():
        cluster_yaml = str(Path(BOOTSTRAP_CONFIG).expanduser())
    fits: list[dict[str, Any]] = []
    if address:
        try:
            fits.append(check_fit(ray_nodes(address), bundles, f"the Ray cluster at {address}"))
        except Exception as err:  # connection refused, authentication, timeouts
            problems.append(
                f"ray.address: cannot connect to Ray at {address}: {_first_line(err)} "
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
            fits.append(check_fit(nodes, bundles, f"{cluster_yaml} at max_workers"))
    if not address and cluster_yaml is None:
        fits.append(check_fit(local_nodes(), bundles, "this machine"))
    for fit in fits:
        print(f"[check] {_fit_line(fit, bundles)}")
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
            f"{verdict['unplaced']} left over{hint}"
        )


def _check_storage(storage: str, report: dict[str, Any], problems: list[str]) -> None:
    report["storage"] = {"uri": storage, "writable": False}
    try:
        probe_storage(storage)
    except Exception as err:  # pyarrow raises OSError, ArrowInvalid, ... with the reason
        problems.append(f"storage: cannot write to {storage}: {_first_line(err)}")
    else:
        report["storage"]["writable"] = True
        print(f"[check] storage: {storage} is writable (a probe file was written and deleted)")
