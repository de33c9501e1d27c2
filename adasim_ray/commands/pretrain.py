"""``adasim-ray pretrain``: one pretraining run (the embedded MNIST demo without ``--config``),
its k-NN at the end and, with ``--baselines``, the table against the same network at random
init and raw pixels."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch

from adasim_ray.commands.args import config_overrides, config_path, set_value
from adasim_ray.commands.evaluate import fmt_top1
from adasim_ray.config import load_config
from adasim_ray.configfile import read_yaml
from adasim_ray.errors import UserError
from adasim_ray.evaluation.protocol import evaluate_backbone, evaluate_raw_pixels
from adasim_ray.recipe import build_backbone_for, make_views, open_eval_sources, open_train_source
from adasim_ray.rundir.checkpoint import latest_checkpoint, read_meta
from adasim_ray.rundir.layout import CONFIG, SUMMARY, is_run_dir, join
from adasim_ray.train.run import pretrain


def _pretrain_overrides(args: argparse.Namespace) -> list[str]:
    sets = config_overrides(args)
    if args.epochs is not None:
        sets.append(f"epochs={args.epochs}")
    return sets


#: A run name: a directory name on any storage.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def cmd_pretrain(args: argparse.Namespace) -> int:
    resume, run_name = args.resume, None
    if args.name is not None:
        if resume is not None:
            raise UserError("--name and --resume: give one (--name NAME starts or resumes "
                            "OUTPUT/NAME by itself)")
        if not NAME_PATTERN.fullmatch(args.name):
            raise UserError(f"--name: {args.name!r} is not a run name (letters, digits, '.', "
                            "'_' and '-', starting with a letter or digit)")
    if args.name is not None:  # said first: what the same command line does this time
        resume, run_name, finished = named_run(_storage_of(args), args.name)
        if finished:
            return 0
    if args.resume is not None:
        # The run's own config, which --set, --data and --epochs may change (a changed key
        # setting is refused against the checkpoint, unless --force).
        if not is_run_dir(resume):
            raise UserError(f"--resume: {resume} is not a run directory (no {CONFIG})")
        cfg = load_config(join(str(resume), CONFIG), _pretrain_overrides(args))
    else:  # a new run, or --name's: this command line's config (checked against a checkpoint)
        cfg = load_config(config_path(args), _pretrain_overrides(args))
    summary = pretrain(cfg, args.output, resume=resume, force=args.force, run_name=run_name)
    final = summary["final"]
    print(f"[adasim] run directory: {summary['run_dir']}")
    if not summary.get("evaluates", True):
        print("[adasim] k-NN: skipped, the training data is unlabelled and no eval_data is set"
              + (" (so are --baselines)" if args.baselines else ""))
    else:
        print(f"[adasim] k-NN top-1 (learned features): {fmt_top1(final.get('knn_top1'))}")
    if args.baselines and summary.get("evaluates", True):
        rows, (memory, test) = _baselines(cfg)
        rows.insert(0, ("learned (this run)", final.get("knn_top1"), final.get("linear_top1")))
        print(_table(rows, cfg, memory, test))
    if args.json:
        print(json.dumps(summary))
    return 0


def _storage_of(args: argparse.Namespace) -> str:
    """Where runs go: ``ray.storage_path`` (``--set``, else the ``--config`` file's), else
    ``--output`` (presets set no storage path)."""
    storage = set_value(args, "ray.storage_path")
    if storage is None and args.config is not None:
        storage = (read_yaml(args.config).get("ray") or {}).get("storage_path")
    return str(storage or args.output)


def named_run(storage: str, name: str) -> tuple[str | None, str | None, bool]:
    """What ``--name NAME`` does with ``STORAGE/NAME`` (``ray.storage_path`` or ``--output``),
    said in one line: (the run directory to resume or None, the run name to start or None,
    whether the run already finished every epoch).

    - no run directory: a new run of that name;
    - a run directory without a complete checkpoint (killed before its first): started
      again in place;
    - a checkpoint: resumed, with every check of ``--resume`` (a key setting of this command
      line that differs from the checkpoint's is refused, unless ``--force``);
    - a checkpoint of the last epoch: nothing to do (exit 0).
    """
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    run_dir = join(storage, name)
    latest = latest_checkpoint(run_dir) if is_run_dir(run_dir) else None
    if latest is None:
        state = "exists without a checkpoint: starting it again in place" if is_run_dir(
            run_dir) else "is new: starting it"
        print(f"[adasim] run {name} at {run_dir} {state}", flush=True)
        return None, name, False
    meta = read_meta(latest)
    done, total = int(meta["epoch"]), int(meta["settings"]["epochs"])
    if done >= total:
        print(f"[adasim] run {name} at {run_dir} finished all {total} epochs: nothing to do "
              f"(its summary: {join(run_dir, SUMMARY)})", flush=True)
        return None, None, True
    print(f"[adasim] run {name} at {run_dir}: resuming from its checkpoint of epoch {done} "
          f"of {total}", flush=True)
    return run_dir, None, False


def _baselines(cfg: Any) -> tuple[list[tuple[str, float | None, float | None]], tuple[int, int]]:
    """(name, k-NN top-1, linear top-1) of the same network at random init and of raw
    pixels, on the same split as the run's final evaluation; and that split's sizes (k-NN
    memory, test queries)."""
    sources = open_eval_sources(cfg)
    views = make_views(cfg, open_train_source(cfg))
    torch.manual_seed(cfg.seed)
    backbone, _ = build_backbone_for(cfg, views)
    protocol = {"linear": cfg.eval.linear, "fewshot": False, "seed": cfg.seed,
                "k": cfg.eval.knn_k, "T": cfg.eval.knn_temperature}
    random_init = evaluate_backbone(backbone, sources[0], sources[1], views.eval_transform,
                                    **protocol)
    raw = evaluate_raw_pixels(sources[0], sources[1], **protocol)
    return [
        ("same network, random init", random_init["knn_top1"], random_init.get("linear_top1")),
        ("raw pixels", raw["knn_top1"], raw.get("linear_top1")),
    ], (len(sources[0]), len(sources[1]))


def _table(rows: list[tuple[str, float | None, float | None]], cfg: Any, memory: int,
           test: int) -> str:
    width = max(len(name) for name, _, _ in rows)
    spec = cfg.eval_data or cfg.data
    lines = [
        f"top-1 on {spec} test split ({test} images; memory / probe training: "
        f"{memory} train images)",
        f"{'':<{width}}  k-NN (k={cfg.eval.knn_k})  linear",
        "-" * (width + 24),
    ]
    lines += [f"{name:<{width}}  {fmt_top1(knn):<12}  {fmt_top1(linear)}"
              for name, knn, linear in rows]
    return "\n".join(lines)
