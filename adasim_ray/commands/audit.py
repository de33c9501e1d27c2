"""The label audit of the paper's Appendix F on a finished run: likely label errors and
duplicates (``adasim_ray.audit``).

    adasim-ray audit RUN_DIR [--top N] [--sheet N] [--features auto|cache|model]
        [--ranking auto|confident|neighbours] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adasim_ray.audit.report import audit_run, load_run_state
from adasim_ray.commands.finished_run import open_finished_run
from adasim_ray.errors import UserError
from adasim_ray.recipe import open_train_source
from adasim_ray.rundir.layout import split


def cmd_audit(args: argparse.Namespace) -> int:
    if args.top < 1 or args.sheet < 1:
        raise UserError(f"--top and --sheet must be >= 1, got {args.top} and {args.sheet}")
    run_dir, cfg, checkpoint = open_finished_run(args.run_dir, "audit")
    source = open_train_source(cfg)
    state = load_run_state(checkpoint)
    if args.output:
        output = Path(args.output)
    elif "://" in run_dir:  # a run on object storage: the audit is written here
        output = Path(f"{split(run_dir)[1]}-audit").resolve()
    else:
        output = Path(run_dir) / "audit"
    try:
        summary = audit_run(
            cfg, source, state, output, top=args.top, sheet=args.sheet, features=args.features,
            ranking=args.ranking,
        )
    except ValueError as err:
        raise UserError(f"audit: {err}") from None
    print(
        f"[adasim] audit of {run_dir} (checkpoint of epoch {summary['epoch']}, "
        f"{summary['features']} features: {summary['features_why']})"
    )
    if "label_suspects" in summary:
        s = summary["label_suspects"]
        print(f"  label suspects by {s['method']} ({s['method_why']}): "
              f"{s['confidently_other_label']} images with their label's confidence under 0.5")
        print(f"    {s['csv']}\n    {s['png']}")
    else:
        print(f"  label suspects: skipped, {cfg.data} has no labels: duplicates only")
    d = summary["duplicates"]
    print(f"  duplicate candidates: {d['ranked']} pairs ranked\n    {d['csv']}\n    {d['png']}")
    if args.json:
        print(json.dumps(summary))
    return 0
