"""``adasim-ray pretrain``: one pretraining run (the embedded MNIST demo without ``--config``),
its k-NN at the end and, with ``--baselines``, the table against the same network at random
init and raw pixels."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from adasim_ray.commands.args import config_overrides, config_path
from adasim_ray.commands.evaluate import fmt_top1
from adasim_ray.config import load_config
from adasim_ray.errors import UserError
from adasim_ray.evaluation.protocol import evaluate_backbone, evaluate_raw_pixels
from adasim_ray.recipe import build_backbone_for, make_views, open_eval_sources, open_train_source
from adasim_ray.rundir.layout import CONFIG, is_run_dir, join
from adasim_ray.train.run import pretrain


def _pretrain_overrides(args: argparse.Namespace) -> list[str]:
    sets = config_overrides(args)
    if args.epochs is not None:
        sets.append(f"epochs={args.epochs}")
    return sets


def cmd_pretrain(args: argparse.Namespace) -> int:
    if args.resume is not None:
        # The run's own config, which --set, --data and --epochs may change (a changed key
        # setting is refused against the checkpoint, unless --force).
        if not is_run_dir(args.resume):
            raise UserError(f"--resume: {args.resume} is not a run directory (no {CONFIG})")
        cfg = load_config(join(str(args.resume), CONFIG), _pretrain_overrides(args))
    else:
        cfg = load_config(config_path(args), _pretrain_overrides(args))
    summary = pretrain(cfg, args.output, resume=args.resume, force=args.force)
    final = summary["final"]
    print(f"[adasim] run directory: {summary['run_dir']}")
    print(f"[adasim] k-NN top-1 (learned features): {fmt_top1(final.get('knn_top1'))}")
    if args.baselines:
        rows = _baselines(cfg)
        rows.insert(0, ("learned (this run)", final.get("knn_top1"), final.get("linear_top1")))
        print(_table(rows, cfg))
    if args.json:
        print(json.dumps(summary))
    return 0


def _baselines(cfg: Any) -> list[tuple[str, float | None, float | None]]:
    """(name, k-NN top-1, linear top-1) of the same network at random init and of raw
    pixels, on the same split as the run's final evaluation."""
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
    ]


def _table(rows: list[tuple[str, float | None, float | None]], cfg: Any) -> str:
    width = max(len(name) for name, _, _ in rows)
    spec = cfg.eval_data or cfg.data
    lines = [
        f"top-1 on {spec} test split ({cfg.eval.max_test} images; memory / probe training: "
        f"{cfg.eval.max_train} train images)",
        f"{'':<{width}}  k-NN (k={cfg.eval.knn_k})  linear",
        "-" * (width + 24),
    ]
    lines += [f"{name:<{width}}  {fmt_top1(knn):<12}  {fmt_top1(linear)}"
              for name, knn, linear in rows]
    return "\n".join(lines)
