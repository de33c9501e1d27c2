"""``adasim-ray export RUN_DIR --output DIR [--which teacher|student]``: the backbone of a run's
newest complete checkpoint as ``backbone.safetensors`` + ``config.json``
(:mod:`adasim_ray.export`)."""

from __future__ import annotations

import argparse

from adasim_ray.commands.finished_run import open_finished_run
from adasim_ray.export import backbone_of, write_export
from adasim_ray.recipe import build_model, make_views, open_train_source
from adasim_ray.rundir.checkpoint import read_checkpoint
from adasim_ray.rundir.layout import split


def cmd_export(args: argparse.Namespace) -> int:
    run_dir, cfg, checkpoint = open_finished_run(args.run_dir, "export")
    meta, state, _ = read_checkpoint(checkpoint, shards=False)
    views = make_views(cfg, open_train_source(cfg))
    model = build_model(cfg, views, int(meta["settings"]["num_images"]))
    model.load_state_dict(state["model"])
    backbone = backbone_of(model, args.which)
    feat_dim = int(meta["settings"]["feat_dim"])
    out = write_export(backbone, args.output, {
        "backbone": cfg.backbone,
        "kwargs": {"image_size": views.size, "in_chans": views.channels,
                   **cfg.backbone_kwargs},
        "image_size": views.size,
        "in_chans": views.channels,
        "mean": list(views.mean),
        "std": list(views.std),
        "feat_dim": feat_dim,
        "run_name": split(run_dir)[1],
        "epoch": int(meta["epoch"]),
        "which": args.which,
    })
    print(f"[export] {args.which} backbone of {split(run_dir)[1]} (epoch {meta['epoch']}, "
          f"{cfg.backbone}, {views.size} px, {views.channels} channel(s), d={feat_dim}) -> {out}")
    return 0
