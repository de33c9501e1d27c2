"""The paper's pictures from run directories (``adasim_ray.visualize``).

    adasim-ray visualize metrics RUN_DIR [RUN_DIR ...] --output PNG [--title T]
    adasim-ray visualize neighbours RUN_DIR --output PNG [--queries N | --ids I,J,...]
"""

from __future__ import annotations

import argparse

from adasim_ray.audit.report import load_run_state
from adasim_ray.commands.finished_run import open_finished_run
from adasim_ray.errors import UserError
from adasim_ray.figures.neighbours import draw_supports, pick_queries, supports
from adasim_ray.recipe import open_train_source
from adasim_ray.rundir.layout import split
from adasim_ray.visualize.metrics import PANELS, plot_metrics


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
    title = (f"{split(run_dir)[1]}: supports after epoch {state.epoch} (w={cfg.adasim.window}, "
             f"K={cfg.adasim.topk}, tau={tau})\nbar: probability of being the partner; green: same "
             "label, red: another")
    draw_supports(items, images, labels, args.output, title)
    for s in items:
        print(f"[adasim] query {s.query}: support {s.ids}, p(other) {s.p_other:.3f}")
    print(f"[adasim] wrote {args.output}")
    return 0
