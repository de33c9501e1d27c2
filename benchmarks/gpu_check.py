"""The GPU path, proved in one command on a machine with one NVIDIA GPU (at most 8 minutes):

1. the engine on CUDA against the engine on the CPU, fed the same batches, including rows
   whose similarities tie exactly (duplicated unit vectors): identical top-K ids, window and
   partner plans;
2. a one-worker Ray Train run on the GPU for each backbone (``resnet50``,
   ``vit_small_patch16_224``) at 224 px on a generated JPEG folder, with two cache shards
   sharing the worker's GPU (fractional GPUs), AMP fp16: one epoch, a checkpoint, then a
   resume that trains the second;
3. the Ray run's images/s against a bare loop on the same GPU (same model, batch and step,
   views made beforehand), the cache shards' share of the epoch, peak GPU memory.

Last line: one JSON object. ``--quick`` runs the same on the CPU with a small ConvNet at
32 px (the test suite's smoke test; it proves nothing about GPUs).

    python benchmarks/gpu_check.py                  # on the GPU machine, after make test
    python benchmarks/gpu_check.py --quick          # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adasim_ray.config import load_config  # noqa: E402
from adasim_ray.engine import BootstrapConfig, Bootstrapper  # noqa: E402
from adasim_ray.methods import train_step  # noqa: E402
from adasim_ray.recipe import build_model, make_views, open_train_source  # noqa: E402
from adasim_ray.train.faults import resumes  # noqa: E402
from adasim_ray.train.rundir import MetricsLog  # noqa: E402


def engine_check(device: str, n: int = 4096, d: int = 64, epochs: int = 4) -> dict:
    """Two engines, one with its cache on ``device``, one on the CPU, fed the same batches.

    Half the rows are copies of 16 unit vectors (similarities exactly 1 or 0, so every one
    of their rows ties at the K-th place in any precision); the rest are random."""
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.one_hot(torch.arange(n // 2) % 16, d).float()
    feats = [torch.cat([base, torch.randn(n - n // 2, d, generator=gen)]) for _ in range(epochs)]
    cfg = BootstrapConfig(mode="adasim", tau=0.5, window=2, topk=8, cache_dtype="float16")
    engines = [Bootstrapper(n, d, cfg, shards=2, seed=1, device=dev)
               for dev in ("cpu", device)]
    ids_equal = window_equal = plan_equal = True
    tied = 0
    for e in range(epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, 512):
            ids = order[lo : lo + 512]
            tops = [eng.step(ids, feats[e][ids]) for eng in engines]
            ids_equal &= torch.equal(tops[0].ids, tops[1].ids.cpu())
            sims = tops[0].sims
            tied += int((sims[:, -1] == sims[:, -2]).sum())
        for eng in engines:
            eng.end_epoch()
        plan_equal &= torch.equal(engines[0].partner_plan(), engines[1].partner_plan().cpu())
        for a, b in zip(engines[0].shards, engines[1].shards, strict=True):
            window_equal &= torch.equal(a.window.ids, b.window.ids)
            window_equal &= torch.equal(a.window.sims, b.window.sims)
    return {"engine_ids_equal": ids_equal, "engine_window_equal": window_equal,
            "engine_plan_equal": plan_equal, "engine_tied_rows": tied}


def make_jpeg_folder(root: Path, images: int, size: tuple[int, int], classes: int = 8) -> None:
    """Photo-like JPEGs (smooth colour fields, edges and noise, quality 90) in class folders
    of ``train/`` and ``test/``: decoding and cropping cost what ImageNet's do."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for split, count in (("train", images), ("test", max(classes * 8, images // 4))):
        for i in range(count):
            c = i % classes
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            phase = rng.uniform(0, 6.28, 3)
            freq = 0.01 + 0.004 * c
            img = np.stack([127 + 100 * np.sin(freq * (xx + yy * (k + 1)) + phase[k])
                            for k in range(3)], axis=-1)
            img += rng.normal(0, 12, img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
                folder / f"{i:05d}.jpg", quality=90)


def train_overrides(args: argparse.Namespace, data: str, backbone: str) -> list[str]:
    gpu = not args.quick
    return [
        f"data=folder:{data}", f"backbone={backbone}", "method=dino", "epochs=2",
        f"batch_size={args.batch}", "checkpoint_every=1", f"amp={'fp16' if gpu else 'off'}",
        f"augment.image_size={args.size}", "adasim.window=1", "adasim.topk=10",
        "dino.warmup_epochs=1", "dino.freeze_last_layer=0", "eval.knn_every=0",
        "eval.max_train=512", "eval.max_test=256", "eval.linear=false", "eval.fewshot=false",
        "ray.num_workers=1", f"ray.use_gpu={str(gpu).lower()}",
        f"ray.gpus_per_worker={0.5 if gpu else 1.0}", "ray.cache_shards=2",
        f"ray.cache_shard_gpus={0.25 if gpu else 0.0}",
        f"ray.cpus_per_worker={4 if gpu else 1}", f"ray.fetch_actors={args.fetch}",
        f"ray.fetch_cpus={1 if gpu else 0}",
        *(["dino.out_dim=256", "dino.hidden_dim=128", "dino.bottleneck_dim=64"]
          if args.quick else []),
    ]


def ray_run(args: argparse.Namespace, data: str, backbone: str, out: Path) -> dict:
    """Epoch 1, a checkpoint, the run stopped; then resumed for epoch 2."""
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, train_overrides(args, data, backbone))
    first = pretrain(cfg, str(out), stop_after=1, log_every=50)
    final = pretrain(cfg, str(out), resume=first["run_dir"], log_every=50)
    rows = MetricsLog(final["run_dir"]).read()
    last = rows[-1]
    return {
        "ray_images_per_s": last["images_per_s"],
        "cache_share": last["cache_busy_s"] / last["train_s"],
        "gpu_mem_peak_gb": last.get("gpu_mem_peak_gb"),
        "resumed_ok": resumes(final["run_dir"]) == [1] and len(rows) == 2,
        "knn_top1": last.get("knn_top1"),
    }


def bare_loop(args: argparse.Namespace, data: str, backbone: str, device: str) -> float:
    """images/s of ``train_step`` alone on the same model, batch and views (made beforehand
    on the CPU as uint8, normalised on the device as the Train worker does)."""
    cfg = load_config(None, train_overrides(args, data, backbone))
    source = open_train_source(cfg)
    views = make_views(cfg, source)
    method = build_model(cfg, views, len(source)).to(device)
    optimizer = method.build_optimizer()
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    amp_dtype = torch.float16 if device == "cuda" else None
    gen = torch.Generator().manual_seed(0)
    images = source.load_many(np.arange(min(len(source), args.batch * 4)))
    batches = []
    for k in range(0, len(images) - args.batch + 1, args.batch):
        imgs = images[k : k + args.batch]
        batches.append((views.views(imgs, 0, gen, normalize=False).to(device),
                        views.views(imgs[::-1], 1, gen, normalize=False).to(device)))
    steps = args.bare_steps
    for i in range(steps + 3):
        if i == 3:  # three warm-up steps (kernel selection, allocator)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        a, p = batches[i % len(batches)]
        train_step(method, optimizer, views.normalize(a), views.normalize(p),
                   i % method.total_iters, scaler, amp_dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch / (time.perf_counter() - t0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU smoke run, small sizes")
    parser.add_argument("--backbones", nargs="+",
                        default=["resnet50", "vit_small_patch16_224"])
    parser.add_argument("--images", type=int, default=1024, help="training images generated")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--fetch", type=int, default=8, help="fetch tasks (ray.fetch_actors)")
    parser.add_argument("--keep", help="keep the data and runs in this directory")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.quick else "cuda"
    if args.quick:
        args.backbones, args.images, args.batch, args.bare_steps = ["cnn_tiny_cpu"], 64, 16, 2
        args.fetch, args.size = 1, 32
    else:
        args.size = 224
    return args


def run_check(args: argparse.Namespace) -> dict:
    """Every part of the check on a running Ray; the figures as one dict."""
    device = args.device
    t_start = time.perf_counter()
    work = Path(args.keep or tempfile.mkdtemp(prefix="adasim-gpu-check-"))
    result: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    result.update(engine_check(device, n=1024 if args.quick else 65536))
    print(f"[gpu_check] engine: {result}", flush=True)
    data = work / "jpegs"
    if not data.exists():
        make_jpeg_folder(data, args.images, (64, 48) if args.quick else (500, 375))
    try:
        for backbone in args.backbones:
            run = ray_run(args, str(data), backbone, work / "runs")
            bare = bare_loop(args, str(data), backbone, device)
            run["bare_images_per_s"] = bare
            run["ray_vs_bare"] = run["ray_images_per_s"] / bare
            result.update({f"{backbone}_{k}": v for k, v in run.items()})
            print(f"[gpu_check] {backbone}: {run}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = time.perf_counter() - t_start
    return result


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (use --quick for the CPU smoke run)")
    import ray

    from adasim_ray.train.run import start_local_ray

    start_local_ray(num_cpus=2 if args.quick else None)
    try:
        result = run_check(args)
    finally:
        ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
