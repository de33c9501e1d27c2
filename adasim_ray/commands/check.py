"""``adasim-ray check``: everything a run needs, checked before any training starts.

    adasim-ray check [--config YAML] [--data SPEC] [--set key=value ...] [--output DIR]
                    [--cluster CLUSTER_YAML] [--json]

1. the config loads and validates (also against the data set's size N);
2. the training data set is present, and its size N (and the evaluation splits);
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
from pathlib import Path
from typing import Any

from adasim_ray.commands.args import (
    config_overrides,
    config_path,
)
from adasim_ray.config import load_config, validate
from adasim_ray.data import describe, open_source, sample_images
from adasim_ray.errors import ConfigError, DataError, UserError, first_line
from adasim_ray.recipe import make_views, open_train_source
from adasim_ray.resources.cluster_yaml import BOOTSTRAP_CONFIG, cluster_yaml_nodes
from adasim_ray.resources.memory import bootstrap_memory, feature_dim, human_bytes
from adasim_ray.resources.placement import (
    Bundle,
    check_fit,
    counted,
    local_nodes,
    ray_nodes,
    run_bundles,
    shortfall,
)
from adasim_ray.resources.storage import probe_storage


def run_check(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path, config_overrides(args))  # a bad field ends here, in one line
    print(f"[check] config: {path} is valid (method {cfg.method}, backbone {cfg.backbone})")
    report: dict[str, Any] = {"config": path, "data": cfg.data}
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
    source = None
    try:
        source = open_train_source(cfg)
    except DataError as err:
        problems.append(f"data: {first_line(err)}")
    if source is not None:
        n = report["num_images"] = len(source)
        size = report["image_size"] = make_views(cfg, source).size
        print(f"[check] data: train on {describe(source)}; views of {size} px")
        try:
            validate(cfg, n, labelled=source.labels is not None)
        except ConfigError as err:
            problems.append(first_line(err))
    eval_spec = cfg.eval_data or cfg.data
    for split, limit_n in (("train", cfg.eval.max_train), ("test", cfg.eval.max_test)):
        if cfg.eval_data is None and source is None:
            continue  # the training data set could not be opened: already reported
        try:
            sample = sample_images(open_source(eval_spec, split), limit_n, cfg.subset_seed,
                                   setting=f"eval.max_{split}")
        except DataError as err:
            problems.append(f"eval data ({split} split): {first_line(err)}")
            continue
        report[f"eval_{split}_images"] = len(sample)
        role = "k-NN memory" if split == "train" else "k-NN queries"
        print(f"[check] eval data ({role}): {describe(sample)}")
    return source


def _check_memory(cfg: Any, source: Any, report: dict[str, Any], problems: list[str]) -> None:
    if source is None:
        print("[check] memory: unknown without the data set's size N")
        return
    try:
        dim = feature_dim(cfg, make_views(cfg, source))
        mem = report["memory"] = bootstrap_memory(cfg, len(source), dim)
    except (ValueError, ConfigError) as err:
        problems.append(f"memory: {first_line(err)}")
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


def _fit_line(fit: dict[str, Any], bundles: list[Bundle]) -> str:
    have, need = fit["available"], fit["needed"]
    verdict = "fits" if fit["fits"] else f"does NOT fit ({fit['unplaced']} left over)"
    return (
        f"resources of {fit['where']} ({len(fit['nodes'])} node(s), {have['CPU']:g} CPUs, "
        f"{have['GPU']:g} GPUs): the run needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs "
        f"[{counted(bundles)}]: {verdict}"
    )


def _check_resources(
    cfg: Any, cluster_yaml: str | None, report: dict[str, Any], problems: list[str]
) -> None:
    """Place the run on a running Ray (now), on a cluster YAML (at its autoscaling maximum,
    the verdict when known: a cluster starts with its head only), else on this machine."""
    bundles = run_bundles(cfg)
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
