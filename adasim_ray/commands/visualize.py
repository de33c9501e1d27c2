"""The paper's pictures from run directories (``adasim_ray.visualize``).

    launch.py visualize metrics RUN_DIR [RUN_DIR ...] --output PNG [--title T]
    launch.py visualize neighbours RUN_DIR --output PNG [--queries N | --ids I,J,...]
"""

from __future__ import annotations

import argparse
from typing import Any

from adasim_ray.audit.report import load_run_state
from adasim_ray.commands import open_finished_run
from adasim_ray.errors import UserError
from adasim_ray.recipe import open_train_source
from adasim_ray.visualize.metrics import PANELS, plot_metrics
from adasim_ray.visualize.neighbours import draw_supports, pick_queries, supports


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="draw the paper's Fig. 3 curves or Fig. 1 supports from run directories",
    )
    kinds = p.add_subparsers(dest="picture", required=True, metavar="PICTURE")
    m = kinds.add_parser(
        "metrics",
        help="Fig. 3: bootstrapping ratio, NN and 2-NN top-1, k-NN over epochs, a line per run",
    )
    m.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    m.add_argument("--output", required=True, help="PNG file to write")
    m.add_argument("--title", help="figure title")
    m.set_defaults(func=cmd_metrics)
    n = kinds.add_parser(
        "neighbours",
        help="Fig. 1: query images, their support and each member's sampling probability",
    )
    n.add_argument("run_dir", metavar="RUN_DIR")
    n.add_argument("--output", required=True, help="PNG file to write")
    n.add_argument("--queries", type=int, default=6,
                   help="queries drawn, those most likely to get another image (default 6)")
    n.add_argument("--ids", help="comma-separated image ids to draw instead")
    n.set_defaults(func=cmd_neighbours)


def cmd_metrics(args: argparse.Namespace) -> int:
    try:
        runs = plot_metrics(args.run_dirs, args.output, args.title)
    except ValueError as err:
        raise UserError(f"visualize metrics: {err}") from None
    for run in runs:
        last = {key: run.series[key][-1][1] for key, _ in PANELS if run.series[key]}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items())
        print(f"[adasim] {run.label}: {len(run.series['bootstrap_ratio'])} epochs; last: {shown}")
    print(f"[adasim] wrote {args.output}")
    return 0


def cmd_neighbours(args: argparse.Namespace) -> int:
    run_dir, cfg, checkpoint = open_finished_run(args.run_dir, "visualize neighbours")
    state = load_run_state(checkpoint)
    tau = cfg.adasim.tau
    try:
        queries = ([int(x) for x in args.ids.split(",")] if args.ids
                   else pick_queries(state.windows, tau, args.queries))
        items = supports(state.windows, queries, tau)
    except ValueError as err:
        raise UserError(f"visualize neighbours: {err}") from None
    source = open_train_source(cfg)
    wanted = sorted({i for s in items for i in [s.query, *s.ids]})
    images = dict(zip(wanted, source.load_many(wanted), strict=True))
    labels = {i: source.label(i) for i in wanted}
    title = (f"{run_dir.name}: supports after epoch {state.epoch} (w={cfg.adasim.window}, "
             f"K={cfg.adasim.topk}, tau={tau})\nbar: probability of being the partner; green: same "
             "label, red: another")
    draw_supports(items, images, labels, args.output, title)
    for s in items:
        print(f"[adasim] query {s.query}: support {s.ids}, p(other) {s.p_other:.3f}")
    print(f"[adasim] wrote {args.output}")
    return 0
