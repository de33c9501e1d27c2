"""``launch.py sweep`` and ``launch.py report``: Ray Tune sweeps of tau, w, K (Table 4).

    launch.py sweep --config experiments/<sweep>.yaml [--output DIR] [--max-trials N]
                    [--set key=value ...] [--resume SWEEP_DIR]
    launch.py report SWEEP_DIR [--json]

A sweep file is a base pretraining config plus a search space (``adasim_ray/sweep/spec.py``);
each trial is a full Ray pretraining run in ``SWEEP_DIR/trials/<trial id>/``. At the end (and
on demand with ``report``) the table goes to ``results.md`` / ``results.csv`` with a plot.
TensorBoard of all trials side by side: ``tensorboard --logdir SWEEP_DIR/trials``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from adasim_ray.commands.args import add_set_argument
from adasim_ray.errors import UserError
from adasim_ray.sweep.report import write_report
from adasim_ray.sweep.tuner import resume_sweep, run_sweep


def register(subparsers: Any) -> None:
    s = subparsers.add_parser(
        "sweep",
        help="Ray Tune sweep (grid or Optuna, optional ASHA) of pretraining runs",
        description=__doc__.split("\n\n")[0],
    )
    s.add_argument("--config", help="sweep YAML (e.g. experiments/mnist_ablation.yaml)")
    s.add_argument("--output", default="sweeps", help="where sweep directories go (sweeps)")
    s.add_argument("--max-trials", type=int, help="run at most this many trials")
    add_set_argument(s, "epochs=2", what="a field of the base pretraining config")
    s.add_argument("--resume", metavar="SWEEP_DIR", help="restore an interrupted sweep")
    s.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    s.set_defaults(func=cmd_sweep)

    r = subparsers.add_parser("report", help="the results table of a sweep directory")
    r.add_argument("sweep_dir", metavar="SWEEP_DIR")
    r.add_argument("--json", action="store_true", help="print the summary as JSON last")
    r.set_defaults(func=cmd_report)


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
