"""Does it reproduce the paper? DINO-2, SimSiam and BYOL, each plain, + NN and + AdaSim, side by
side on the CPU data with the same recipe, schedule and seeds, with as many seeds as make the
standard error of each paired difference (+ AdaSim minus plain, + NN minus plain, in k-NN
points) at most ``--target-se`` (0.7), or ``--max-seeds`` (12), whichever comes first; also
DINO-2 + AdaSim with tau = 0, which must equal the plain baseline exactly.

Every finished run is kept (``RUNS/<method>-<mode>-s<seed>/``, and its summary and metrics in
``OUTPUT/records/<name>.json``, which is committed) and a run of the study continues where the
last one stopped, on any checkout: ``--budget-min`` ends a sitting after that many
minutes of new runs, so that the study runs in several sittings, beside other work. It writes
``results.md`` (mean, std, the paired difference with its 95% interval per method, a sentence
per claim of the paper: confirmed, refuted or cannot tell at this scale, and how many seeds are
in), ``fig3a_bootstrap.png`` (the bootstrapping ratio per epoch, the paper's Fig. 3a) and
``fig1_dino_adasim.png`` (Fig. 1's supports) into ``--output``.

    python benchmarks/fidelity.py [--budget-min 60] [--max-seeds 12] [--target-se 0.7]
    python benchmarks/fidelity.py --scale gpu     # the GPU plan: its configs and commands

``--scale gpu`` writes nothing and runs nothing here: it prints the plan for a GPU node
(ImageNet-100, ViT-S/16, 100 epochs; ``experiments/fidelity/imagenet100_vits16.yaml``, which
``adasim-ray check`` validates) and the command line of each of its runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = (("dino", "DINO-2"), ("simsiam", "SimSiam"), ("byol", "BYOL"))
MODES = (("none", "plain"), ("nn", "+ NN"), ("adasim", "+ AdaSim"))
#: Each method's recipe at CPU size on top of the demo's (``presets/demo.yaml``: cnn_tiny_cpu,
#: batch 64, w = 2, K = 5, tau = 0.2, and its ``byol:`` section); SimSiam's widths shrunk from
#: 2048 / 2048 / 512.
RECIPES = {
    "dino": [],
    "simsiam": ["simsiam.proj_hidden_dim=512", "simsiam.proj_dim=512", "simsiam.pred_dim=128"],
    "byol": [],
}
GPU_PLAN = ROOT / "experiments" / "fidelity" / "imagenet100_vits16.yaml"
#: Student's t quantile t_{0.975, df} for the 95% interval of a mean of df + 1 paired values.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}


@dataclass(frozen=True)
class Paired:
    """A paired difference over seeds, in k-NN points (100 x top-1)."""

    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def se(self) -> float:
        """Standard error of the mean (inf below two seeds)."""
        return statistics.stdev(self.diffs) / math.sqrt(self.n) if self.n > 1 else math.inf

    @property
    def ci95(self) -> tuple[float, float]:
        half = T975.get(self.n - 1, 1.96) * self.se
        return self.mean - half, self.mean + half


def verdict(paired: Paired, expect: str) -> str:
    """``confirms`` / ``refutes`` / ``cannot tell`` for a claim that the difference is
    ``expect`` (``negative``: NN hurts; ``non-negative``: AdaSim >= baseline) from the 95%
    interval: a claim is confirmed when the interval lies wholly on its side (for
    ``non-negative``: above 0), refuted when wholly on the other, else the scale cannot tell.

    Examples:
        >>> verdict(Paired((-2.0, -1.5, -2.5)), "negative")
        'confirms'
        >>> verdict(Paired((-2.0, 1.5, 0.5)), "non-negative")
        'cannot tell'
    """
    low, high = paired.ci95
    if expect == "negative":
        return "confirms" if high < 0 else "refutes" if low > 0 else "cannot tell"
    return "confirms" if low > 0 else "refutes" if high < 0 else "cannot tell"


def overrides(args: argparse.Namespace, method: str, mode: str, seed: int,
              tau: float | None = None) -> list[str]:
    sets = [f"method={method}", f"adasim.mode={mode}", f"seed={seed}",
            f"limit_images={args.images}", f"epochs={args.epochs}",
            f"checkpoint_every={args.epochs}", f"eval.max_train={args.eval_train}",
            f"eval.max_test={args.eval_test}", "eval.fewshot=false", "eval.linear=false",
            "eval.knn_every=0"]
    if tau is not None:
        sets.append(f"adasim.tau={tau}")
    return sets + RECIPES[method]


def run_dir_of(args: argparse.Namespace, name: str) -> Path:
    return Path(args.runs or Path(args.output) / "runs") / name


def record_of(args: argparse.Namespace, name: str) -> Path:
    """A finished run's record (its summary and per-epoch metrics, a few kB), kept beside
    ``results.md`` and committed, so that the study continues on another machine or checkout
    where the run directories (gitignored) are not."""
    return Path(args.output) / "records" / f"{name}.json"


def finished(args: argparse.Namespace, name: str) -> dict | None:
    """The run's metrics rows and summary when it finished, else None: from its record, or
    from its run directory (which then writes the record)."""
    from adasim_ray.rundir.metrics import MetricsLog

    record = record_of(args, name)
    if record.is_file():
        return json.loads(record.read_text())
    done = run_dir_of(args, name) / "summary.json"
    if not done.is_file():
        return None
    summary = json.loads(done.read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    found = {"summary": summary, "rows": MetricsLog(summary["run_dir"]).read(),
             "commit": commit or None}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(found, indent=1) + "\n")
    return found


def run_one(args: argparse.Namespace, name: str, sets: list[str]) -> dict:
    """One pretraining run of the demo config with ``sets`` (kept: a finished one is read)."""
    found = finished(args, name)
    if found is not None:
        return found
    from adasim_ray.config import load_config
    from adasim_ray.presets import default_config_path
    from adasim_ray.train.run import pretrain

    out = run_dir_of(args, name).parent
    if run_dir_of(args, name).exists():  # killed part-way in an earlier sitting: start over
        import shutil

        shutil.rmtree(run_dir_of(args, name))
    cfg = load_config(default_config_path(), sets)
    t0 = time.perf_counter()
    summary = pretrain(cfg, str(out), run_name=name, log_every=10_000)
    print(f"[fidelity] {name}: {time.perf_counter() - t0:.0f} s, k-NN "
          f"{summary['final'].get('knn_top1')}", flush=True)
    found = finished(args, name)
    assert found is not None
    return found


def knn_points(run: dict) -> float:
    return 100.0 * float(run["summary"]["final"]["knn_top1"])


def differences(runs: dict, method: str, mode: str, seeds: list[int]) -> Paired:
    return Paired(tuple(knn_points(runs[method, mode, s]) - knn_points(runs[method, "none", s])
                        for s in seeds))


def enough(runs: dict, seeds: list[int], target_se: float) -> bool:
    """Every paired difference's standard error at most ``target_se`` (3 seeds at least)."""
    if len(seeds) < 3:
        return False
    return all(differences(runs, m, mode, seeds).se <= target_se
               for m, _ in METHODS for mode in ("nn", "adasim"))


def study(args: argparse.Namespace) -> tuple[dict, list[int], dict, bool]:
    """Run seed after seed (every method and mode of a seed before the next seed) until the
    differences are tight enough, the seeds run out, or the sitting's budget is spent.
    Returns (runs, the complete seeds, the tau = 0 run, whether the study is complete)."""
    from adasim_ray.train.run import start_local_ray

    start_local_ray()
    t0 = time.perf_counter()
    runs: dict[tuple[str, str, int], dict] = {}
    seeds: list[int] = []
    tau0 = run_one(args, "dino-adasim-tau0-s0", overrides(args, "dino", "adasim", 0, tau=0.0))
    for seed in range(args.max_seeds):
        for method, _ in METHODS:
            for mode, _ in MODES:
                name = f"{method}-{mode}-s{seed}"
                if finished(args, name) is None and \
                        time.perf_counter() - t0 > 60 * args.budget_min:
                    print(f"[fidelity] this sitting's {args.budget_min:g} min are spent; "
                          f"{len(seeds)} complete seed(s): run it again to continue",
                          flush=True)
                    return runs, seeds, tau0, False
                runs[method, mode, seed] = run_one(args, name,
                                                   overrides(args, method, mode, seed))
        seeds.append(seed)
        if enough(runs, seeds, args.target_se):
            return runs, seeds, tau0, True
    return runs, seeds, tau0, True


def plot_bootstrap(runs: dict, seeds: list[int], path: Path) -> None:
    """Fig. 3a: the bootstrapping ratio per epoch of + NN and + AdaSim, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.2), sharey=True)
    for ax, (method, title) in zip(axes, METHODS, strict=True):
        for mode, label in MODES:
            curves = [[row["bootstrap_ratio"] for row in runs[method, mode, s]["rows"]]
                      for s in seeds]
            mean = [statistics.fmean(c[e] for c in curves) for e in range(len(curves[0]))]
            ax.plot(range(1, len(mean) + 1), mean, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_yscale("symlog", linthresh=0.01)
    axes[0].set_ylabel("bootstrapping ratio (j* != i)")
    axes[0].legend()
    fig.suptitle(f"Fig. 3a at CPU scale, mean of {len(seeds)} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args: argparse.Namespace, runs: dict, seeds: list[int], tau0: dict,
           complete: bool) -> str:
    wall = sum(r["summary"]["wall_s"] for r in [*runs.values(), tau0])
    state = ("complete" if complete else
             "in progress (a sitting's budget ran out; run the command again to continue)")
    lines = [
        "# Fidelity study: the paper's claims at CPU scale",
        "",
        f"Made by `python benchmarks/fidelity.py` on this project's 2-core CPU machine, "
        f"{time.strftime('%Y-%m-%d')}: {len(seeds)} complete seed(s) ({state}; the target: "
        f"every paired difference's standard error at most {args.target_se} k-NN points, or "
        f"{args.max_seeds} seeds), {len(runs) + 1} runs, {wall / 60:.0f} min of runs. The "
        f"demo's recipe (`adasim_ray/presets/demo.yaml`: `cnn_tiny_cpu`, batch 64, w = 2, "
        f"K = 5, tau = 0.2) on {args.images} MNIST training images for {args.epochs} epochs "
        "(bootstrapping from epoch 3, once the window holds two epochs); each method's heads "
        "at CPU size (`RECIPES` in the script). k-NN top-1 (k = 20) on "
        f"{args.eval_test} test images against {args.eval_train} training images.",
        "",
        "| method | k-NN mean (std), % | difference to plain, points | 95% interval | SE |"
        " bootstrap ratio, last epoch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    if not seeds:
        return "\n".join([*lines, "", "No seed is complete yet.", ""])
    for method, title in METHODS:
        for mode, label in MODES:
            knn = [knn_points(runs[method, mode, s]) for s in seeds]
            std = statistics.stdev(knn) if len(knn) > 1 else float("nan")
            ratio = statistics.fmean(runs[method, mode, s]["summary"]["final"]
                                     ["bootstrap_ratio"] for s in seeds)
            if mode == "none":
                diff_cells = "| | "
            else:
                d = differences(runs, method, mode, seeds)
                low, high = d.ci95
                diff_cells = f"{d.mean:+.2f} | [{low:+.2f}, {high:+.2f}] | {d.se:.2f}"
            lines.append(f"| {title} {label} | {statistics.fmean(knn):.2f} ({std:.2f}) | "
                         f"{diff_cells} | {ratio:.3f} |")
    base = [row["loss"] for row in runs["dino", "none", 0]["rows"]] if 0 in seeds else []
    same = base == [row["loss"] for row in tau0["rows"]]
    lines += [
        "",
        "## The paper's claims at this scale",
        "",
        "1. *AdaSim with tau = 0 is the baseline.* DINO-2 + AdaSim (tau = 0) against plain "
        "DINO-2, seed 0: per-epoch losses "
        + ("**identical**, bit for bit." if same else "**differ**."),
    ]
    nn = differences(runs, "dino", "nn", seeds)
    lines.append(
        f"2. *+ NN hurts or collapses DINO-2* (Table 2, Fig. 3): + NN minus plain "
        f"{nn.mean:+.2f} k-NN points, 95% interval [{nn.ci95[0]:+.2f}, {nn.ci95[1]:+.2f}] "
        f"over {nn.n} seeds: this scale **{verdict(nn, 'negative')}** it."
        + (f" (SimSiam: {differences(runs, 'simsiam', 'nn', seeds).mean:+.2f}; BYOL: "
           f"{differences(runs, 'byol', 'nn', seeds).mean:+.2f}.)"))
    parts = []
    for method, title in METHODS:
        d = differences(runs, method, "adasim", seeds)
        parts.append(f"{title} {d.mean:+.2f} [{d.ci95[0]:+.2f}, {d.ci95[1]:+.2f}]: "
                     f"**{verdict(d, 'non-negative')}**")
    lines.append("3. *AdaSim is at least as good as the baseline* (Table 2): + AdaSim minus "
                 "plain, k-NN points with the 95% interval: " + "; ".join(parts) + ". "
                 "Confirmed means the interval lies above 0, refuted below 0; an interval "
                 "that spans 0 cannot tell a gain from the seed's noise.")
    lines += ["", "Per seed, k-NN %:", ""]
    for method, _ in METHODS:
        for mode, _ in MODES:
            cells = ", ".join(f"{knn_points(runs[method, mode, s]):.1f}" for s in seeds)
            lines.append(f"- {method} {mode}: {cells}")
    lines += ["", "Pictures: `fig3a_bootstrap.png` (Fig. 3a), `fig1_dino_adasim.png` (Fig. 1).",
              ""]
    return "\n".join(lines)


def gpu_plan() -> None:
    """The study's GPU scale: its config and one command line per run."""
    print(f"[fidelity] GPU plan: {GPU_PLAN.relative_to(ROOT)} (ImageNet-100, ViT-S/16, "
          "100 epochs, one node of 8 GPUs); check it first:")
    print(f"  adasim-ray check --config {GPU_PLAN.relative_to(ROOT)} --num-images 126689 "
          "--cluster cluster.yaml")
    for seed in range(3):
        for mode, _ in MODES:
            print(f"  adasim-ray pretrain --config {GPU_PLAN.relative_to(ROOT)} --data "
                  f"folder:IMAGENET100 --set adasim.mode={mode} --set seed={seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--max-seeds", type=int, default=12)
    parser.add_argument("--target-se", type=float, default=0.7,
                        help="stop adding seeds once every paired difference's standard error "
                             "(k-NN points) is at most this")
    parser.add_argument("--budget-min", type=float, default=float("inf"),
                        help="end this sitting after this many minutes of new runs")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--eval-train", type=int, default=5000)
    parser.add_argument("--eval-test", type=int, default=1000)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "fidelity"))
    parser.add_argument("--runs", help="where the run directories go (default: OUTPUT/runs)")
    args = parser.parse_args()
    if args.scale == "gpu":
        gpu_plan()
        return
    runs, seeds, tau0, complete = study(args)
    out = Path(args.output)
    if seeds:
        plot_bootstrap(runs, seeds, out / "fig3a_bootstrap.png")
    fig1_run = runs.get(("dino", "adasim", 0), {}).get("summary", {}).get("run_dir")
    if fig1_run and Path(fig1_run, "summary.json").is_file():  # its cache, on this machine
        subprocess.run([sys.executable, str(ROOT / "launch.py"), "visualize", "neighbours",
                        fig1_run, "--output",
                        str(out / "fig1_dino_adasim.png")], check=True, cwd=ROOT)
    (out / "results.md").write_text(report(args, runs, seeds, tau0, complete))
    print((out / "results.md").read_text())
    print(json.dumps({"seeds": len(seeds), "complete": complete, "runs": len(runs) + 1}))


if __name__ == "__main__":
    main()
