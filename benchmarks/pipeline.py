"""Views per core: this project's fetch against the PIL loader of the paper's authors, side by
side in one run, on the same ImageNet-like JPEGs (a folder and its Parquet copy).

(a) **This project**: ``GlobalViews.pair_views`` on batches of (anchor, partner) pairs whose
    partners are all other images (every view decodes its own image, as the reference's
    does), plus ``GlobalViews.normalize`` of both batches (the Train worker's share, on the
    CPU here): all the work of making a view.
(b) **Reference**: an ``ImageFolder``-style loader with DINO's global-crop transform on PIL
    images: ``RandomResizedCrop(224, scale, bicubic)``, flip, ``ColorJitter(0.4, 0.4, 0.2,
    0.1)`` p 0.8, grayscale p 0.2, PIL ``GaussianBlur`` (p 1.0 for view 1, 0.1 for view 2),
    solarise p 0.2 (view 2), ``ToTensor``, ``Normalize``; one decode per view.

Both run on one thread (torch and PIL), alternating rounds; the figure of each side is its
median. The data set is generated here: photo-like content (smooth colour fields, shapes,
texture noise; not noise), sizes around 500 x 375 (ImageNet's typical), JPEG quality 90,
class-sorted folders, and its Parquet copy by ``launch.py prepare``'s converter.

    python benchmarks/pipeline.py [--images 256] [--rounds 3] [--size 224] [--quick]

The last line is one JSON object: ``views_per_core``, ``reference_views_per_core``,
``ratio`` and ``bytes_per_view`` (of the folder; a view leaves the fetch as uint8, the
reference's as float32), ``by_format`` (the same for ``folder`` and ``parquet``) and
``target_met`` (ratio >= 1.5 on both). ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

TARGET = 1.5
BATCH = 64


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A synthetic photograph: a few smooth colour waves, 5-15 filled shapes, a slight blur
    and sensor-like noise, so that a JPEG of it costs what a photo's does to decode."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((height, width, 3), np.float32)
    for _ in range(6):
        fx, fy = rng.uniform(0.002, 0.03, 2)
        phase, amplitude = rng.uniform(0, 2 * np.pi, 3), rng.uniform(20, 60, 3)
        field += amplitude * np.sin(2 * np.pi * (fx * xx + fy * yy)[..., None] + phase)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6) * 200 + 20
    image = Image.fromarray(field.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 15))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image).astype(np.int16) + rng.normal(0, 8, (height, width, 3)).astype(
        np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_folder(root: Path, images: int, classes: int = 8, seed: int = 0) -> Path:
    """``root/train/cNN/*.jpg`` (and a small ``test/``): landscape and portrait photos of
    about 500 x 375, quality 90."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("test", classes)):
        for k in range(count):
            width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
            if rng.random() < 0.25:
                width, height = height, width
            path = root / split / f"c{k % classes:02d}" / f"{k:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo_like(rng, width, height).save(path, quality=90)
    return root


class _PilBlur:
    """DINO's blur: PIL's GaussianBlur of a radius uniform in (0.1, 2.0), with probability p."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def reference_transforms(size: int, scale: tuple[float, float]) -> list:
    """The two global-view transforms of the reference loader (torchvision on PIL)."""
    from torchvision import transforms as T

    normalize = T.Compose([T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    common = [T.RandomResizedCrop(size, scale=scale, interpolation=Image.BICUBIC),
              T.RandomHorizontalFlip(),
              T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
              T.RandomGrayscale(p=0.2)]
    return [T.Compose([*common, _PilBlur(1.0), normalize]),
            T.Compose([*common, _PilBlur(0.1), T.RandomSolarize(128, p=0.2), normalize])]


def reference_views(source, transforms: list, order: np.ndarray) -> float:
    """Seconds for one view per index of ``order`` (alternating view 1 and view 2), each
    decoded from the file or bytes by PIL, as ``ImageFolder`` does."""
    start = time.perf_counter()
    for k, index in enumerate(order.tolist()):
        data = source.encoded(index)
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            transforms[k % 2](image.convert("RGB"))
    return time.perf_counter() - start


def project_views(source, views, order: np.ndarray, seed: int) -> float:
    """Seconds for the fetch to make the pairs of ``order`` (anchors; each partner another
    image) and for the worker to normalise them: ``2 * len(order)`` views."""
    partners = np.roll(order, 1)
    buffers: list[torch.Tensor | None] = [None, None]  # as the training loop keeps them
    start = time.perf_counter()
    for lo in range(0, len(order), BATCH):
        rng = np.random.default_rng([seed, lo])
        anchor, partner = views.pair_views(source, order[lo: lo + BATCH],
                                           partners[lo: lo + BATCH], rng)
        buffers = [views.normalize(anchor, buffers[0]), views.normalize(partner, buffers[1])]
    return time.perf_counter() - start


def measure(source, size: int, rounds: int, seed: int) -> dict:
    from adasim_ray.augmentations import GlobalViews

    views = GlobalViews.for_source(source, size)
    transforms = reference_transforms(size, views.crop_scale)
    order = np.random.default_rng(seed).permutation(len(source))
    project_views(source, views, order[:8], seed)  # warm up both (first-call costs)
    reference_views(source, transforms, order[:8])
    ours, theirs = [], []
    for r in range(rounds):
        random.seed(seed + r)
        torch.manual_seed(seed + r)
        ours.append(2 * len(order) / project_views(source, views, order, seed + r))
        theirs.append(2 * len(order) / reference_views(source, transforms,
                                                       np.repeat(order, 2)))
        print(f"  round {r + 1}/{rounds}: project {ours[-1]:.0f} views/s, "
              f"reference {theirs[-1]:.0f}", flush=True)
    project, reference = statistics.median(ours), statistics.median(theirs)
    return {
        "views_per_core": round(project, 1),
        "reference_views_per_core": round(reference, 1),
        "ratio": round(project / reference, 3),
        "bytes_per_view": views.channels * size * size,  # uint8 out of the fetch
        "reference_bytes_per_view": 4 * 3 * size * size,  # float32
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256, help="train images generated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="side of a view")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="keep the generated data set here (default: temp)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 16 images, 1 round, 64 px views")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.size = 16, 1, 64
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    """The measurement of :func:`main` (one torch thread, restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_benchmark(args)
    finally:
        torch.set_num_threads(threads)  # in-process callers (the test suite) keep theirs


def _run_benchmark(args: argparse.Namespace) -> dict:
    from adasim_ray.data import convert_folder_to_parquet, open_source

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.data_dir or tmp)
        folder = base / "folder"
        if not (folder / "train").is_dir():
            print(f"[pipeline] writing {args.images} photo-like JPEGs to {folder}", flush=True)
            write_folder(folder, args.images, seed=args.seed)
        parquet = base / "parquet"
        if not (parquet / "train").is_dir():
            convert_folder_to_parquet(folder, parquet)
        result: dict = {"by_format": {}}
        for kind, path in (("folder", folder), ("parquet", parquet)):
            source = open_source(f"{kind}:{path}", "train")
            print(f"[pipeline] {kind}: {len(source)} images, one thread", flush=True)
            result["by_format"][kind] = measure(source, args.size, args.rounds, args.seed)
    result.update(result["by_format"]["folder"])
    result["target"] = TARGET
    result["target_met"] = all(r["ratio"] >= TARGET for r in result["by_format"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_benchmark(args)
    for kind, figures in result["by_format"].items():
        print(f"[pipeline] {kind}: project {figures['views_per_core']} views/s per core, "
              f"reference {figures['reference_views_per_core']}: ratio {figures['ratio']} "
              f"(target >= {TARGET})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
