"""Your own images, as a new user brings them: a class-sorted JPEG folder of its own image size,
then the same images without class folders, each trained with the plain command
``adasim-ray pretrain --data folder:DIR`` (the ``cpu`` preset it picks on a machine without a
GPU) and compared with the same network at random init (``--baselines``).

The folder is made here from the embedded MNIST (nothing is downloaded): each digit, scaled to
3/4 of the side, is placed at a random spot of a 48 x 48 RGB canvas, in a bright ink of random
brightness and tint on a dim, noisy background, and saved as a JPEG, ``train/<class>/`` and
``test/<class>/``; the flattened copy holds the training images loose, without a test split.
``--backgrounds tinted`` gives each image a background of its own random level and tint: a
colour that tells images apart but not classes, the shortcut the views' colour jitter does not
remove (docs/benchmarks.md has what the cpu preset does there). Prints the lines the runs print
about their recipe and k-NN, and last one JSON line.

    python benchmarks/own_folder.py [--train 6000] [--test 1000] [--size 48]
                                    [--backgrounds plain|tinted] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_folder(out: Path, train: int, test: int, size: int, seed: int = 0,
                backgrounds: str = "plain") -> Path:
    """Write the class-sorted JPEG folder (see the module docstring); returns it."""
    from adasim_ray.data import open_source, sample_images

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        digits = sample_images(open_source("mnist", split), count, seed)
        for i in range(len(digits)):
            side = size * 3 // 4  # the digit fills most of the picture, as an object does
            digit = np.asarray(Image.fromarray(digits.load(i)[:, :, 0]).resize(
                (side, side), Image.BILINEAR), dtype=np.float32) / 255.0
            # a dim, noisy background and a bright ink: the ink's colour and brightness vary
            # from image to image (what the views' jitter teaches to ignore), the shape is
            # the class
            tint, level = rng.uniform(0.7, 1.0, size=3), rng.uniform(10, 90)
            if backgrounds == "plain":
                tint, level = np.ones(3), 50.0
            background = level * tint + rng.normal(0, 12, (size, size, 3))
            canvas = np.clip(background, 0, 255)
            y, x = rng.integers(0, size - side + 1, size=2)
            ink = rng.uniform(170, 255) * rng.uniform(0.8, 1.0, size=3)
            patch = canvas[y:y + side, x:x + side]
            canvas[y:y + side, x:x + side] = (patch * (1 - digit[..., None])
                                              + ink * digit[..., None])
            path = out / split / f"class_{digits.label(i)}" / f"{split}_{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(canvas.astype(np.uint8)).save(path, quality=90)
    return out


def flatten(folder: Path, out: Path) -> Path:
    """The training images of ``folder`` loose in ``out`` (no class folders, no test split)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((folder / "train").rglob("*.jpg")):
        (out / path.name).symlink_to(path)
    return out


def pretrain(data: Path, runs: Path, extra: list[str]) -> tuple[str, float]:
    """``adasim-ray pretrain --data folder:DATA --baselines`` in a subprocess: its output and
    wall time."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "pretrain", "--data", f"folder:{data}",
         "--output", str(runs), "--baselines", *extra],
        capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pretrain failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - t0


def _row(out: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}\s+([0-9.]+)", out, re.M)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--backgrounds", choices=("plain", "tinted"), default="plain")
    parser.add_argument("--work", default="/tmp/adasim-own-folder")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 200 / 50 images, 2 epochs")
    args = parser.parse_args()
    extra = ["--set", "epochs=2", "--set", "dino.warmup_epochs=1"] if args.quick else []
    if args.quick:
        args.train, args.test = 200, 50
    work = Path(args.work) / f"{args.backgrounds}-{args.train}-{args.test}-{args.size}"
    folder = work / "folder"
    if not folder.is_dir():
        make_folder(folder, args.train, args.test, args.size, backgrounds=args.backgrounds)
    flat = work / "flat"
    if not flat.is_dir():
        flatten(folder, flat)
    results = {}
    for name, data in (("labelled", folder), ("unlabelled", flat)):
        out, wall = pretrain(data, work / "runs", extra)
        for line in out.splitlines():
            if line.startswith("[adasim] preset") or line.startswith("[adasim] recipe") \
                    or "k-NN" in line or line.startswith(("learned", "same network")):
                print(f"{name}: {line}", flush=True)
        results[name] = {"wall_s": round(wall, 1),
                         "knn_learned": _row(out, "learned (this run)"),
                         "knn_random_init": _row(out, "same network, random init"),
                         "knn_skipped": "k-NN: skipped" in out}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
