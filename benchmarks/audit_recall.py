"""How many planted label errors and duplicates the label audit finds, for each ranking.

A labelled data set (``mnist``: the demo's 3,000 stratified images; ``digits``; or any class
folder, ``folder:PATH``) is written as a class folder of PNGs with planted cases: ``--flips``
images moved to the folder of a random *other* class, ``--duplicates`` images copied under new
names into their own class. A short pretraining runs on it (``adasim-ray pretrain --preset
demo``, the demo's data-sized fields kept: 28 px half-area crops, k-NN on up to 5,000 / 1,000
images), then the audit ranks its final features (``--features model``) twice: by neighbour
votes and by confident learning. Printed: the share of planted flips in the top 2 x flips
label suspects and of planted duplicates in the top 2 x duplicates pairs, for each ranking,
beside the run's k-NN top-1; the last line is JSON.

    python benchmarks/audit_recall.py [--data mnist] [--flips 30] [--duplicates 30] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The demo's fields that a folder data set would reset (``presets.demo_resets``), kept.
DEMO_KEPT = ["augment.crop_scale=[0.5, 1.0]", "eval.max_train=5000", "eval.max_test=1000"]
#: The tiny smoke run on digits (8 px images, as tests/audit/test_audit_run.py trains them),
#: in local mode (the loop in the driver, no Ray Train: the audit is what it smoke-tests).
QUICK = ["epochs=1", "ray.num_workers=0", "dino.warmup_epochs=0", "augment.image_size=8",
         "augment.crop_scale=[0.6, 1.0]", "eval.max_train=300", "eval.max_test=100",
         "eval.knn_every=0", "eval.linear=false", "eval.fewshot=false", "checkpoint_every=1"]


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def plant(data: str, out: Path, limit: int | None, flips: int, duplicates: int,
          seed: int = 0) -> dict[str, object]:
    """Write ``out/train/<class>/`` (planted) and ``out/test/<class>/``; returns what was
    planted: ``flipped`` (file names) and ``pairs`` ((original, copy) file names)."""
    from adasim_ray.data import open_source, sample_images

    rng = np.random.default_rng(seed)
    train = sample_images(open_source(data, "train"), limit, seed)
    test = sample_images(open_source(data, "test"), 1000, seed)
    classes = len(train.class_names) if train.class_names else int(train.labels.max()) + 1
    n = len(train)
    chosen = rng.choice(n, size=flips + duplicates, replace=False)
    flipped, originals = set(chosen[:flips].tolist()), chosen[flips:]
    names, planted_flips = [], []
    for i in range(n):
        label = int(train.labels[i])
        name = f"{i:06d}.png"
        if i in flipped:
            label = int((label + rng.integers(1, classes)) % classes)
            planted_flips.append(name)
        _save(train.load(i), out / "train" / str(label) / name)
        names.append((label, name))
    pairs = []
    for k, i in enumerate(originals):
        label, name = names[i]
        copy = f"{n + k:06d}.png"
        _save(train.load(int(i)), out / "train" / str(label) / copy)
        pairs.append((name, copy))
    for i in range(len(test)):
        _save(test.load(i), out / "test" / str(int(test.labels[i])) / f"{i:06d}.png")
    return {"flipped": planted_flips, "pairs": pairs, "train_images": n + duplicates}


def pretrain(data: Path, runs: Path, extra: list[str]) -> tuple[Path, dict, float]:
    """The demo's recipe on ``folder:data`` in a subprocess: the run directory, its summary
    and the wall time."""
    t0 = time.perf_counter()
    argv = [sys.executable, str(ROOT / "launch.py"), "pretrain", "--preset", "demo",
            "--data", f"folder:{data}", "--output", str(runs)]
    for item in extra:
        argv += ["--set", item]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pretrain failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    (run_dir,) = runs.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, summary, time.perf_counter() - t0


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def audit(run_dir: Path, out: Path, planted: dict, top: int) -> dict[str, object]:
    """Both rankings of the run's final features; the share of planted cases found in each."""
    from adasim_ray.audit.report import audit_run, load_run_state
    from adasim_ray.commands.finished_run import open_finished_run
    from adasim_ray.recipe import open_train_source

    _, cfg, checkpoint = open_finished_run(str(run_dir), "audit")
    source = open_train_source(cfg)
    state = load_run_state(checkpoint)
    flips, pairs = set(planted["flipped"]), {tuple(p) for p in planted["pairs"]}
    found: dict[str, object] = {}
    for ranking in ("neighbours", "confident"):
        t0 = time.perf_counter()
        audit_run(cfg, source, state, out / ranking, top=top, sheet=4, features="model",
                  ranking=ranking)
        suspects = _rows(out / ranking / "label_suspects.csv")[: 2 * len(flips)]
        got = sum(Path(row["path"]).name in flips for row in suspects)
        dups = _rows(out / ranking / "duplicates.csv")[: 2 * len(pairs)]
        got_pairs = {tuple(sorted((Path(r["path_a"]).name, Path(r["path_b"]).name)))
                     for r in dups}
        found[ranking] = {
            "flips_found": got,
            "flips_share": got / max(len(flips), 1),
            "duplicates_found": len({tuple(sorted(p)) for p in pairs} & got_pairs),
            "duplicates_share": len({tuple(sorted(p)) for p in pairs} & got_pairs)
            / max(len(pairs), 1),
            "audit_s": round(time.perf_counter() - t0, 1),
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist",
                        help="a labelled data set with a test split: mnist, digits, folder:PATH")
    parser.add_argument("--limit", type=int, default=3000,
                        help="training images before planting (stratified; the demo's 3,000)")
    parser.add_argument("--flips", type=int, default=30)
    parser.add_argument("--duplicates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="what is planted where")
    parser.add_argument("--work", default="/tmp/adasim-audit-recall")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides of the demo's recipe")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 300 digits, 5 flips, 5 duplicates, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.data, args.limit, args.flips, args.duplicates = "digits", 300, 5, 5
    import shutil

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    planted = plant(args.data, work / "data", args.limit, args.flips, args.duplicates, args.seed)
    overrides = DEMO_KEPT + (QUICK if args.quick else []) + args.set
    run_dir, summary, wall = pretrain(work / "data", work / "runs", overrides)
    knn = (summary.get("final") or {}).get("knn_top1")
    top = 2 * max(args.flips, args.duplicates)
    found = audit(run_dir, work / "audit", planted, top)
    print(f"planted in {planted['train_images']} images of {args.data}: {args.flips} flips, "
          f"{args.duplicates} duplicates; {summary['epochs']} epochs in {wall:.0f} s, "
          f"k-NN top-1 {knn}")
    for ranking, f in found.items():
        print(f"  {ranking:<10}  flips in top {2 * args.flips}: {f['flips_found']}/{args.flips} "
              f"({f['flips_share']:.0%})   duplicates in top {2 * args.duplicates} pairs: "
              f"{f['duplicates_found']}/{args.duplicates}")
    print(json.dumps({"data": args.data, "train_images": planted["train_images"],
                      "flips": args.flips, "duplicates": args.duplicates,
                      "epochs": summary["epochs"], "knn_top1": knn,
                      "pretrain_s": round(wall, 1), **found}))


if __name__ == "__main__":
    main()
