"""The table of a sweep, like the paper's Table 4: one row per trial, from its run directory.

Reads ``<sweep>/trials/<trial id>/`` (config.yaml, metrics.jsonl, summary.json or error.txt),
or the same under ``<storage>/<sweep name>/trials/`` when the base config names a
``ray.storage_path`` (object storage: the trials' runs are written there),
so it works on a finished, interrupted or still running sweep; writes ``results.md``,
``results.csv`` and ``knn_vs_factors.png`` into the sweep directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

from adasim_ray.configfile import ConfigError, read_yaml
from adasim_ray.rundir.layout import CONFIG, SUMMARY, file_type, join, list_dirs, read_text, split
from adasim_ray.rundir.metrics import METRICS
from adasim_ray.sweep.spec import SHORT_NAMES, load_sweep, trials_root

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
PLOT = "knn_vs_factors.png"


@dataclass
class TrialRow:
    trial: str
    values: dict[str, Any]
    status: str
    epochs: int = 0
    knn_top1: float | None = None
    linear_top1: float | None = None
    bootstrap_ratio: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _dotted(data: dict[str, Any], name: str) -> Any:
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _rows(uri: str) -> list[dict[str, Any]]:
    rows = []
    for line in (read_text(uri) or "").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: what came before is still good
    return rows


def read_trial(trial_dir: str | Path, factors: list[str]) -> TrialRow:
    """One trial's row from its run directory (a local path or a URI)."""
    trial_dir = str(trial_dir)
    name = split(trial_dir)[1]
    error = read_text(join(trial_dir, "error.txt"))
    if error is not None:
        point = json.loads(read_text(join(trial_dir, "point.json")) or "{}")
        return TrialRow(
            trial=name,
            values={f: point.get(f) for f in factors},
            status="error",
            error=error.strip(),
        )
    config = yaml.safe_load(read_text(join(trial_dir, CONFIG)) or "") or {}
    metrics = _rows(join(trial_dir, METRICS))
    knn = [r["knn_top1"] for r in metrics if r.get("knn_top1") is not None]
    last = metrics[-1] if metrics else {}
    epochs_planned = int(config.get("epochs", 0))
    if file_type(join(trial_dir, SUMMARY)) == pafs.FileType.File:
        status = "done"
    elif metrics:
        status = f"stopped after {len(metrics)}/{epochs_planned} epochs"
    else:
        status = "not started"
    return TrialRow(
        trial=name,
        values={f: _dotted(config, f) for f in factors},
        status=status,
        epochs=len(metrics),
        knn_top1=knn[-1] if knn else None,
        linear_top1=last.get("linear_top1"),
        bootstrap_ratio=last.get("bootstrap_ratio"),
    )


def collect(sweep_dir: str | Path) -> tuple[list[str], list[TrialRow], str, str]:
    """(swept factors, one row per trial in trial order, metric, mode) of a sweep dir."""
    path = Path(sweep_dir).expanduser().resolve()
    if not (path / "sweep.yaml").is_file():
        raise ConfigError(f"{path} is not a sweep directory (no sweep.yaml)")
    base = read_yaml(path / "base.yaml")
    sweep = load_sweep(path / "sweep.yaml", base=base)
    # The trials' run directories: SWEEP/trials, or on the base's storage (object storage).
    rows = [read_trial(t, sweep.factors) for t in list_dirs(trials_root(base, path), "")]
    return sweep.factors, rows, sweep.search.metric, sweep.search.mode


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if not math.isnan(value) else "nan"
    return str(value)


def best_row(rows: list[TrialRow], mode: str = "max") -> TrialRow | None:
    scored = [r for r in rows if r.knn_top1 is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.knn_top1)


def markdown(factors: list[str], rows: list[TrialRow], mode: str = "max") -> str:
    heads = [SHORT_NAMES.get(f, f) for f in factors]
    cols = ["trial", *heads, "k-NN top-1", "linear top-1", "bootstrap ratio", "epochs", "status"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            r.trial,
            *(_fmt(r.values.get(f)) for f in factors),
            _fmt(r.knn_top1),
            _fmt(r.linear_top1),
            _fmt(r.bootstrap_ratio),
            str(r.epochs),
            r.status if r.error is None else f"error: {r.error}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_row(rows, mode)
    lines.append("")
    if best is None:
        lines.append("Best setting: none yet (no trial has a k-NN accuracy).")
    else:
        setting = ", ".join(
            f"{SHORT_NAMES.get(f, f)} = {_fmt(best.values.get(f))}" for f in factors
        )
        lines.append(f"Best setting: {setting} (k-NN top-1 {best.knn_top1:.4f}, {best.trial}).")
    return "\n".join(lines) + "\n"


def csv_text(factors: list[str], rows: list[TrialRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["trial", *factors, "knn_top1", "linear_top1", "bootstrap_ratio", "epochs", "status",
         "error"]
    )
    for r in rows:
        writer.writerow(
            [r.trial, *(r.values.get(f) for f in factors), r.knn_top1, r.linear_top1,
             r.bootstrap_ratio, r.epochs, r.status, r.error or ""]
        )
    return out.getvalue()


def plot(factors: list[str], rows: list[TrialRow], out: Path) -> None:
    """k-NN top-1 against each swept factor, one panel per factor; numeric factors on a
    symmetric-log axis (tau = 0 and w = 50 on one plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.knn_top1 is not None]
    fig, axes = plt.subplots(1, max(len(factors), 1), figsize=(max(4 * len(factors), 5), 3.4),
                             squeeze=False)
    for ax, name in zip(axes[0], factors, strict=False):
        pts = [(r.values.get(name), r.knn_top1) for r in scored if r.values.get(name) is not None]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in pts)
        if numeric and pts:
            pts.sort()
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o", color="tab:blue")
            means: dict[Any, list[float]] = {}
            for x, y in pts:
                means.setdefault(x, []).append(y)
            mx = sorted(means)
            ax.plot(mx, [sum(means[x]) / len(means[x]) for x in mx], "-", color="tab:blue",
                    alpha=0.5)
            if max(xs) > 0 and (max(xs) / max(min(x for x in xs if x > 0), 1e-12)) > 20:
                ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
        elif pts:
            labels = [str(x) for x, _ in pts]
            ax.plot(labels, [y for _, y in pts], "o")
        ax.set_xlabel(SHORT_NAMES.get(name, name))
        ax.set_ylabel("k-NN top-1")
        ax.grid(alpha=0.3)
    fig.suptitle(f"k-NN top-1 of {len(scored)} trials against each swept factor", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write results.md, results.csv and the plot; returns a summary (best trial, counts)."""
    path = Path(sweep_dir).expanduser().resolve()
    factors, rows, metric, mode = collect(path)
    (path / RESULTS_MD).write_text(
        f"# Sweep {path.name}\n\nOne row per trial; k-NN top-1 at the last evaluated epoch, "
        f"bootstrap ratio at the last epoch. Search metric: {metric} ({mode}).\n\n"
        + markdown(factors, rows, mode)
    )
    (path / RESULTS_CSV).write_text(csv_text(factors, rows))
    plot(factors, rows, path / PLOT)
    best = best_row(rows, mode)
    summary = {
        "sweep_dir": str(path),
        "trials": len(rows),
        "done": sum(r.status == "done" for r in rows),
        "errors": sum(r.status == "error" for r in rows),
        "best": None if best is None else {"trial": best.trial, **best.values,
                                           "knn_top1": best.knn_top1},
    }
    print(markdown(factors, rows, mode), flush=True)
    print(f"[sweep] wrote {path / RESULTS_MD}, {path / RESULTS_CSV}, {path / PLOT}", flush=True)
    return summary
