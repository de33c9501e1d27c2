"""``launch.py``: the command line of adasim-ray.

    launch.py pretrain [--config YAML] [--data SPEC] [--epochs N] [--output DIR]
                       [--set key=value ...] [--resume RUN_DIR [--force]]
    launch.py eval (--checkpoint CKPT | --random-init BACKBONE | --raw-pixels) --data SPEC [--json]
    launch.py prepare FOLDER OUT_DIR [--rows-per-shard N] [--skip-corrupt]
    launch.py audit RUN_DIR [--top N] [--sheet N] [--features cache|model] [--output DIR]

Every bad input ends in one line on stderr naming the problem, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from adasim_ray.augmentations import GlobalViews
from adasim_ray.backbones import build_backbone
from adasim_ray.commands.args import (
    add_config_and_data,
    add_set_argument,
    config_overrides,
    config_path,
)
from adasim_ray.config import config_from_dict, load_config
from adasim_ray.configfile import read_yaml
from adasim_ray.data import convert_folder_to_parquet, first_images, open_source
from adasim_ray.errors import AdasimError, UserError
from adasim_ray.evaluation.protocol import evaluate_backbone, evaluate_raw_pixels
from adasim_ray.presets import default_config_path
from adasim_ray.recipe import (
    build_backbone_for,
    build_model,
    make_views,
    open_eval_sources,
    open_train_source,
)
from adasim_ray.train.checkpoint import latest_checkpoint, read_checkpoint
from adasim_ray.train.run import pretrain
from adasim_ray.train.rundir import CONFIG, is_run_dir

__all__ = ["UserError", "build_parser", "default_config_path", "main"]

# Further sub-commands live in their own modules; each has `register(subparsers)`, which adds
# its parser and sets `func` (a function of the parsed arguments returning the exit code).
COMMAND_MODULES: list[str] = [
    "adasim_ray.commands.audit",
    "adasim_ray.commands.check",
    "adasim_ray.commands.sweep",
    "adasim_ray.commands.visualize",
]


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
        cfg = load_config(Path(args.resume) / CONFIG, _pretrain_overrides(args))
    else:
        cfg = load_config(config_path(args), _pretrain_overrides(args))
    summary = pretrain(cfg, args.output, resume=args.resume, force=args.force)
    final = summary["final"]
    print(f"[adasim] run directory: {summary['run_dir']}")
    print(f"[adasim] k-NN top-1 (learned features): {_fmt(final.get('knn_top1'))}")
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
    import torch

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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _table(rows: list[tuple[str, float | None, float | None]], cfg: Any) -> str:
    width = max(len(name) for name, _, _ in rows)
    spec = cfg.eval_data or cfg.data
    lines = [
        f"top-1 on {spec} test split ({cfg.eval.max_test} images; memory / probe training: "
        f"{cfg.eval.max_train} train images)",
        f"{'':<{width}}  k-NN (k={cfg.eval.knn_k})  linear",
        "-" * (width + 24),
    ]
    lines += [f"{name:<{width}}  {_fmt(knn):<12}  {_fmt(linear)}" for name, knn, linear in rows]
    return "\n".join(lines)


def _checkpoint_backbone(path: str, views_for: Any) -> tuple[Any, Any]:
    """(eval backbone, its run config) of a run directory or one checkpoint directory."""
    ckpt = Path(path)
    if not ckpt.exists():
        raise UserError(f"--checkpoint: {path} does not exist")
    if not (ckpt / "model.pt").is_file():
        found = latest_checkpoint(ckpt)
        if found is None:
            raise UserError(f"--checkpoint: no complete checkpoint in {path}")
        ckpt = found
    if not is_run_dir(ckpt.parent):
        raise UserError(f"--checkpoint: {ckpt.parent} has no {CONFIG} (not a run directory)")
    cfg = config_from_dict(read_yaml(ckpt.parent / CONFIG))
    meta, state, _ = read_checkpoint(ckpt)
    views = views_for(cfg)
    model = build_model(cfg, views, int(meta["settings"]["num_images"]))
    model.load_state_dict(state["model"])
    return model.eval_backbone(), cfg


def cmd_eval(args: argparse.Namespace) -> int:
    train = first_images(open_source(args.data, "train"), args.max_train)
    test = first_images(open_source(args.data, "test"), args.max_test)
    protocol = {"linear": not args.no_linear, "fewshot": not args.no_fewshot, "seed": args.seed}
    if args.raw_pixels:
        what = "raw pixels"
        result = evaluate_raw_pixels(train, test, size=train.native_size or 224, **protocol)
    else:
        if args.checkpoint:
            backbone, cfg = _checkpoint_backbone(args.checkpoint, lambda c: make_views(c, train))
            views = make_views(cfg, train)
            what = f"checkpoint {args.checkpoint}"
        else:
            views = GlobalViews.for_source(train)
            backbone, _ = build_backbone(
                args.random_init, image_size=views.size, in_chans=views.channels
            )
            what = f"{args.random_init} at random init"
        result = evaluate_backbone(backbone, train, test, views.eval_transform, **protocol)
    result["features"] = what
    result["data"] = args.data
    print(f"{what} on {args.data}: n_train={result['n_train']} n_test={result['n_test']}")
    for key in ("knn_top1", "knn_top5", "linear_top1"):
        print(f"  {key}: {_fmt(result.get(key))}")
    if result.get("fewshot_mean") is not None:
        print(
            f"  fewshot 5-way 5-shot: {result['fewshot_mean']:.4f} +- {result['fewshot_ci95']:.4f}"
        )
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    summary = convert_folder_to_parquet(
        args.folder,
        args.out_dir,
        rows_per_shard=args.rows_per_shard,
        skip_corrupt=args.skip_corrupt,
    )
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain with Ray Train (default: the MNIST demo)")
    add_config_and_data(p)
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--output", default="runs", help="where run directories go (default: runs)")
    add_set_argument(p, "adasim.tau=0.3")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--force",
        action="store_true",
        help="resume even if key settings differ from the checkpoint's",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also print the k-NN of the random-init network and of raw pixels",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON last")
    p.set_defaults(func=cmd_pretrain)

    e = sub.add_parser("eval", help="k-NN, linear probe and few-shot evaluation")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a run directory or checkpoint directory")
    which.add_argument("--random-init", metavar="BACKBONE", help="a randomly initialised backbone")
    which.add_argument("--raw-pixels", action="store_true", help="flattened pixels as features")
    e.add_argument("--data", required=True, help="data set spec (train and test splits)")
    e.add_argument("--max-train", type=int, help="use at most this many train images")
    e.add_argument("--max-test", type=int, help="use at most this many test images")
    e.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    e.add_argument("--no-fewshot", action="store_true", help="skip the few-shot evaluation")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="last line: one JSON object")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("prepare", help="convert an image folder to Parquet shards")
    r.add_argument("folder", help="image folder (class sub-folders; train/ and test/ or one split)")
    r.add_argument("out_dir", help="output directory (must be empty or absent)")
    r.add_argument("--rows-per-shard", type=int, default=1000)
    r.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (counted)")
    r.set_defaults(func=cmd_prepare)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AdasimError as err:  # UserError, ConfigError, DataError, CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with `launch.py pretrain --resume RUN_DIR`", file=sys.stderr)
        return 130
