"""Fig. 3: bootstrapping ratio, NN top-1, 2-NN top-1 and k-NN top-1 over epochs, one line per run.

Each run directory's ``metrics.jsonl`` gives the series; a run is labelled by what differs
between the runs drawn (e.g. ``tau=0.2`` / ``tau=0.5``), else by its directory name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adasim_ray.configfile import flatten, read_yaml
from adasim_ray.rundir.layout import CONFIG, is_run_dir
from adasim_ray.rundir.metrics import MetricsLog

#: (metrics.jsonl key, panel title), in the paper's order.
PANELS = (
    ("bootstrap_ratio", "bootstrapping ratio"),
    ("nn_top1", "NN top-1 (same label)"),
    ("nn2_top1", "2-NN top-1 (same label)"),
    ("knn_top1", "k-NN top-1"),
)
_LABEL_KEYS = ("method", "adasim.mode", "adasim.tau", "adasim.window", "adasim.topk",
               "adasim.oracle_p", "backbone", "seed")


@dataclass
class RunCurves:
    label: str
    run_dir: Path
    series: dict[str, list[tuple[int, float]]]  # key -> [(epoch, value)], missing values left out


def load_curves(run_dirs: list[str | Path]) -> list[RunCurves]:
    """The Fig. 3 series of each run; ValueError (one line) for a directory without metrics."""
    runs, settings = [], []
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "metrics.jsonl").is_file():
            raise ValueError(f"{run_dir}: no metrics.jsonl (not a run directory, or no epoch yet)")
        rows = MetricsLog(str(run_dir)).read()
        series = {
            key: [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) is not None]
            for key, _ in PANELS
        }
        settings.append(
            {".".join(k): v for k, v in flatten(read_yaml(run_dir / CONFIG))}
            if is_run_dir(run_dir)
            else {}
        )
        runs.append(RunCurves(run_dir.name, run_dir, series))
    differing = [k for k in _LABEL_KEYS if len({str(s.get(k)) for s in settings}) > 1]
    if differing and len(runs) > 1:
        for run, s in zip(runs, settings, strict=True):
            run.label = ", ".join(f"{k.split('.')[-1]}={s.get(k)}" for k in differing)
    return runs


def plot_metrics(run_dirs: list[str | Path], output: str | Path, title: str | None = None
                 ) -> list[RunCurves]:
    """Draw the four Fig. 3 panels for the runs into ``output`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_curves(run_dirs)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), squeeze=False)
    for ax, (key, name) in zip(axes[0], PANELS, strict=True):
        for run in runs:
            points = run.series[key]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=run.label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key == "bootstrap_ratio":
            ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or "AdaSim over epochs (Fig. 3)", fontsize=11)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return runs
