"""``adasim-ray eval``: k-NN, linear probe and few-shot evaluation of a checkpoint, of a
backbone at random init, or of raw pixels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from adasim_ray.augmentations import GlobalViews
from adasim_ray.backbones import build_backbone
from adasim_ray.config import config_from_dict
from adasim_ray.configfile import read_yaml
from adasim_ray.data import describe, open_source, sample_images
from adasim_ray.errors import UserError
from adasim_ray.evaluation.linear_dino import DinoLinearSettings, dino_linear, parse_lrs
from adasim_ray.evaluation.protocol import evaluate_backbone, evaluate_raw_pixels
from adasim_ray.recipe import build_model, make_views
from adasim_ray.rundir.checkpoint import latest_checkpoint, read_checkpoint
from adasim_ray.rundir.layout import CONFIG, file_type, is_run_dir, join, split


def fmt_top1(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _checkpoint_backbone(path: str, views_for: Any) -> tuple[Any, Any]:
    """(eval backbone, its run config) of a run directory or one checkpoint directory, on a
    local disk or object storage (``s3://bucket/runs/RUN``)."""
    ckpt = path if "://" in path else str(Path(path).expanduser().resolve())
    if file_type(ckpt) != pafs.FileType.Directory:
        raise UserError(f"--checkpoint: {path} does not exist")
    if file_type(join(ckpt, "model.pt")) != pafs.FileType.File:
        found = latest_checkpoint(ckpt)
        if found is None:
            raise UserError(f"--checkpoint: no complete checkpoint in {path}")
        ckpt = str(found)
    parent = split(ckpt)[0]
    if not is_run_dir(parent):
        raise UserError(f"--checkpoint: {parent} has no {CONFIG} (not a run directory)")
    cfg = config_from_dict(read_yaml(join(parent, CONFIG)))
    meta, state, _ = read_checkpoint(ckpt)
    views = views_for(cfg)
    model = build_model(cfg, views, int(meta["settings"]["num_images"]))
    model.load_state_dict(state["model"])
    return model.eval_backbone(), cfg


def _device(name: str | None) -> torch.device:
    """``--device``, checked: a torch device that this machine has."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: {name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {name} asked for, but this machine has no CUDA GPU")
    return device


def cmd_eval(args: argparse.Namespace) -> int:
    dino = args.linear_protocol == "dino"
    if dino and args.no_linear:
        raise UserError("--linear-protocol dino and --no-linear contradict each other")
    if dino and args.raw_pixels:
        raise UserError("--linear-protocol dino trains on a backbone's features: use "
                        "--checkpoint or --random-init, not --raw-pixels")
    try:
        settings = DinoLinearSettings(epochs=args.linear_epochs, lrs=parse_lrs(args.linear_lrs),
                                      batch_size=args.linear_batch_size,
                                      n_last_blocks=args.linear_blocks)
    except ValueError as err:
        raise UserError(str(err)) from None
    train = sample_images(open_source(args.data, "train"), args.max_train, args.subset_seed,
                          setting="--max-train")
    test = sample_images(open_source(args.data, "test"), args.max_test, args.subset_seed,
                         setting="--max-test")
    for part in (train, test):
        if part.labels is None:
            raise UserError(f"--data: {part.name} has no labels, and k-NN, the linear probe "
                            "and few-shot all need them; evaluate on a labelled data set")
    print(f"[eval] memory / probe training: {describe(train)}", flush=True)
    print(f"[eval] queries: {describe(test)}", flush=True)
    device = _device(args.device)
    protocol = {"linear": not args.no_linear and not dino, "fewshot": not args.no_fewshot,
                "seed": args.seed, "device": device, "progress_prefix": "[eval]"}
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
        if dino:
            result.update(_dino_linear(backbone, train, test, views, settings, device,
                                       args.seed))
    if result.get("linear_top1") is not None and not dino:
        result["linear_protocol"] = LINEAR_PROBE
    result["device"] = str(device)
    result["features"] = what
    result["data"] = args.data
    print(f"{what} on {args.data}: n_train={result['n_train']} n_test={result['n_test']}")
    for key in ("knn_top1", "knn_top5"):
        print(f"  {key}: {fmt_top1(result.get(key))}")
    if dino:
        print(f"  linear_top1 (DINO protocol: SGD {settings.epochs} epochs on random resized "
              f"crops, best of {len(settings.lrs)} base lrs, {result['linear_lr']:g}; "
              f"{result['linear_features']}): {fmt_top1(result['linear_top1'])}")
    elif not args.no_linear:
        print(f"  linear_top1 (fast probe: L-BFGS on centre-crop features; the paper's numbers "
              f"use --linear-protocol dino): {fmt_top1(result.get('linear_top1'))}")
    if result.get("fewshot_mean") is not None:
        print(
            f"  fewshot 5-way 5-shot: {result['fewshot_mean']:.4f} +- {result['fewshot_ci95']:.4f}"
        )
    if args.json:
        print(json.dumps(result))
    return 0


#: ``linear_protocol`` of the default linear evaluation.
LINEAR_PROBE = "lbfgs-centre-crop"


def _dino_linear(backbone: Any, train: Any, test: Any, views: GlobalViews,
                 settings: DinoLinearSettings, device: torch.device,
                 seed: int) -> dict[str, Any]:
    """DINO's linear protocol: its training views are the eval size's random resized crops
    of scale (0.08, 1) and flips (where the data set allows them), nothing photometric."""
    crops = GlobalViews(size=views.size, channels=views.channels, mean=views.mean,
                        std=views.std, crop_scale=(0.08, 1.0), flip=views.flip, jitter_p=0.0,
                        grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
    try:
        return dino_linear(backbone, train, test, lambda images, gen: crops.views(images, 0, gen),
                           views.eval_transform, settings=settings, device=device, seed=seed)
    except ValueError as err:
        raise UserError(f"--linear-protocol dino: {err}") from None
