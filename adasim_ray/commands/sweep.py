"""``adasim-ray sweep`` and ``adasim-ray report``: Ray Tune sweeps of tau, w, K (Table 4).

    adasim-ray sweep --config experiments/<sweep>.yaml [--output DIR] [--max-trials N]
                    [--set key=value ...] [--resume SWEEP_DIR]
    adasim-ray report SWEEP_DIR [--json]

A sweep file is a base pretraining config plus a search space (``adasim_ray/sweep/spec.py``);
each trial is a full Ray pretraining run in ``SWEEP_DIR/trials/<trial id>/``. At the end (and
on demand with ``report``) the table goes to ``results.md`` / ``results.csv`` with a plot.
TensorBoard of all trials side by side: ``tensorboard --logdir SWEEP_DIR/trials``.
"""

from __future__ import annotations

import argparse
import json

from adasim_ray.errors import UserError
from adasim_ray.sweep.report import write_report
from adasim_ray.sweep.tuner import resume_sweep, run_sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.max_trials is not None and args.max_trials < 1:
        raise UserError(f"--max-trials: must be >= 1, got {args.max_trials}")
    if args.resume:
        if args.config or args.set or args.max_trials:
            raise UserError("--resume: the sweep continues as it started; drop --config/--set")
        sweep_dir = resume_sweep(args.resume, log_every=args.log_every)
    else:
        if not args.config:
            raise UserError("sweep: --config SWEEP_YAML is required (or --resume SWEEP_DIR)")
        sweep_dir = run_sweep(
            args.config,
            args.output,
            overrides=args.set,
            max_trials=args.max_trials,
            log_every=args.log_every,
        )
    print(f"[sweep] done: {sweep_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    summary = write_report(args.sweep_dir)
    if args.json:
        print(json.dumps(summary))
    return 0
