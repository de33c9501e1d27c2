"""The GPU path, checked in phases on a machine with one NVIDIA GPU, under a deadline.

Each phase prints one JSON line as it ends (``{"phase": NAME, ...}``); the last line is one
JSON object of all phases. A phase that would not end before ``--budget-s`` is skipped with
a line; one still running at the deadline is cut (its line says so), so the check never
overruns. Phases:

- ``env``: Python, torch, CUDA, driver, GPU, timm, numpy, pyarrow, Ray and optuna versions
  ("absent" where they do not import).
- ``engine``: the engine with its cache on the GPU against the engine on the CPU, fed the same
  batches (duplicated unit vectors tie exactly): top-K ids, windows and partner plans equal
  except where two candidates lie within 1e-6 (counted), for each way a GPU multiplies
  (``engine.cache.CUDA_MATMULS``).
- ``query``: one cache query at N = 1,281,167 rows, d = 384 and 2048, float16 cache, batches
  of 128 and 1024: ms per query (CUDA events) for each way of multiplying, the cache's GB,
  recall of the float16 cache's top-10 against a float32 cache's.
- ``step``: images/s and peak GPU memory of a DINO step (student on both views, teacher) for
  ViT-S/16 and ResNet-50 at 224 px, batch 128, in float32 (TF32), float16 and bfloat16, with
  and without AdaSim's cache calls (query, write, window record at N = 1,281,167): the share
  of a step that AdaSim costs on a GPU.
- ``ddp``: a one-rank NCCL process group, SyncBatchNorm, a DistributedDataParallel wrap and 5
  float16 steps with DINO's last layer frozen and clipping: frozen gradients none, the
  GradScaler's scale and skipped steps, ``all_gather`` and ``gather`` of CUDA tensors.
- ``ray`` (only where Ray imports, e.g. from ``../shared/tools/gpu-kit``): a one-worker Ray
  Train run of ViT-S on generated JPEGs, stopped after one epoch and resumed, against a bare
  loop of the same step (``ray_vs_bare``). Without the dashboard's packages (the kit has
  none), the local Ray starts without its dashboard.

Only torch, timm, numpy, pyarrow and pillow are needed before the ``ray`` phase: nothing on
that path imports Ray or optuna. ``--quick`` runs every phase on the CPU at small sizes (the
test suite's smoke test; it proves nothing about GPUs).

    python benchmarks/gpu_check.py                  # on the GPU machine (docs/gpus.md)
    python benchmarks/gpu_check.py --quick          # CPU smoke run
"""

from __future__ import annotations

import time

T0 = time.monotonic()  # the budget counts from here, before the heavy imports

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adasim_ray.engine import BootstrapConfig, Bootstrapper, EngineAgreement  # noqa: E402
from adasim_ray.engine.cache import (  # noqa: E402
    CUDA_MATMULS,
    DEFAULT_CUDA_MATMUL,
    SimilarityCache,
    mixed_matmul_available,
)

PHASES = ("env", "engine", "query", "step", "ddp", "ray")
#: Seconds a phase is given at least before it starts (GPU, CPU smoke run). Estimates, not yet
#: measured on a GPU: each phase's line reports its ``phase_s`` to replace them.
NEEDS_S = {"env": (5, 5), "engine": (60, 20), "query": (60, 15), "step": (120, 40),
           "ddp": (45, 15), "ray": (200, 150)}
#: Seconds kept back at the end for the last lines and shutting Ray down.
GRACE_S = 10.0
IMAGENET_N = 1_281_167


class DeadlineError(Exception):
    """The deadline passed inside a phase."""


# -- the run: phases, deadline, lines ------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke run at small sizes (proves nothing about GPUs)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="deadline in seconds from the start; phases that would not end "
                             "before it are skipped, one still running is cut")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="the phases to run, in the order of PHASES")
    parser.add_argument("--keep", help="keep the ray phase's data and runs in this folder")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.quick else "cuda"
    return args


def remaining(args: argparse.Namespace) -> float:
    return args.budget_s - (time.monotonic() - T0)


@contextlib.contextmanager
def alarm_at(seconds: float) -> Iterator[None]:
    """Raise DeadlineError in the main thread after ``seconds`` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise DeadlineError(f"deadline reached after {time.monotonic() - T0:.0f} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line, default=str), flush=True)


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase asked for, each line printed as it ends; all phases as one dict."""
    result: dict[str, Any] = {"budget_s": args.budget_s, "device_kind": args.device}
    for name in [p for p in PHASES if p in args.phases]:
        need = NEEDS_S[name][1 if args.quick else 0]
        left = remaining(args) - GRACE_S
        if left < need:
            line = {"skipped": f"{left:.0f} s left before the deadline, needs ~{need} s"}
            emit({"phase": name, **line})
            result[name] = line
            continue
        out: dict[str, Any] = {}
        start = time.monotonic()
        try:
            with alarm_at(left):
                PHASE_FUNCTIONS[name](args, out)
        except DeadlineError as err:
            out["cut"] = str(err)
        except Exception as err:  # a phase that breaks is reported, and the next ones run
            out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        out["phase_s"] = round(time.monotonic() - start, 2)
        emit({"phase": name, **out})
        result[name] = out
    result["wall_s"] = round(time.monotonic() - T0, 2)
    return result


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: needs a CUDA GPU and found none (torch "
                 f"{torch.__version__}); --quick runs the CPU smoke test")
    result = run_check(args)
    emit(result)
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    sys.exit(1 if failed else 0)


# -- helpers -------------------------------------------------------------------------------

def version_of(module: str) -> str:
    """A module's version, or "absent" where it does not import."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return "absent"
    return str(getattr(mod, "__version__", "unknown"))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Milliseconds per call of ``fn``: CUDA events on a GPU, the wall clock on a CPU."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) * 1000 / repeats


def peak_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 1e9, 3) if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def fill_cache(cache: SimilarityCache, feats_at: Callable[[int, int], torch.Tensor],
               block: int = 65536) -> None:
    """Write every row of ``cache``, ``block`` rows at a time (``feats_at(lo, hi)``)."""
    for lo in range(0, cache.size, block):
        hi = min(lo + block, cache.size)
        cache.write(torch.arange(lo, hi, device=cache.device), feats_at(lo, hi))


def clustered(n: int, d: int, device: str, seed: int) -> Callable[[int, int], torch.Tensor]:
    """Rows ``[lo, hi)`` of N features around 1000 centres (neighbours that mean something,
    unlike i.i.d. Gaussians), generated on ``device`` block by block."""
    gen = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(1000, d, generator=gen, device=device)

    def feats_at(lo: int, hi: int) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed * 7919 + lo)
        which = torch.randint(0, len(centres), (hi - lo,), generator=g, device=device)
        return centres[which] + 0.5 * torch.randn(hi - lo, d, generator=g, device=device)

    return feats_at


@contextlib.contextmanager
def gpu_speed_settings(device: str) -> Iterator[None]:
    """TF32 matmuls and convolutions and ``cudnn.benchmark`` inside (what a GPU worker is
    expected to run with), the previous settings after."""
    if device != "cuda":
        yield
        return
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1:]


def build_dino(backbone: str, image_size: int, batch: int, quick: bool,
               iters_per_epoch: int = 10_000, **config: Any) -> torch.nn.Module:
    """A DINO (authors' head unless ``quick``) on a randomly initialised backbone."""
    from adasim_ray.backbones import build_backbone
    from adasim_ray.methods import build_method

    net, feat_dim = build_backbone(backbone, image_size=image_size, in_chans=3)
    config = {"warmup_epochs": 1, **config}  # a run of 2 epochs
    if quick:
        config = {"out_dim": 256, "hidden_dim": 128, "bottleneck_dim": 64, **config}
    return build_method("dino", net, feat_dim, epochs=2, iters_per_epoch=iters_per_epoch,
                        batch_size=batch, **config)


# -- phases --------------------------------------------------------------------------------

def phase_env(args: argparse.Namespace, out: dict[str, Any]) -> None:
    out.update({
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": version_of("timm"),
        "numpy": np.__version__,
        "pyarrow": version_of("pyarrow"),
        "pillow": version_of("PIL"),
        "mixed_matmul": mixed_matmul_available(),
        "default_cuda_matmul": DEFAULT_CUDA_MATMUL,
    })
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                    "gpu_memory_gb": round(props.total_memory / 1e9, 1),
                    "bf16": torch.cuda.is_bf16_supported()})
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=10, check=True)
            out["driver"] = smi.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out["driver"] = "unknown"
    else:
        out["gpu"] = "none (cpu smoke run)"
    out["ray"] = version_of("ray")
    out["optuna"] = version_of("optuna")


def phase_engine(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """CPU engine and one device engine per way of multiplying, in lockstep."""
    n, d, epochs, batch = (1024, 32, 3, 128) if args.quick else (65536, 64, 4, 512)
    gen = torch.Generator().manual_seed(0)
    # Half the rows are copies of 16 unit vectors: similarities exactly 1 or 0, so every one of
    # their rows ties at the K-th place in any precision (the tie order must hold on both).
    base = torch.nn.functional.one_hot(torch.arange(n // 2) % 16, d).float()
    cfg = BootstrapConfig(mode="adasim", tau=0.5, window=2, topk=8, cache_dtype="float16")
    cpu = Bootstrapper(n, d, cfg, shards=2, seed=1, device="cpu")
    devices = {}
    for how in CUDA_MATMULS:
        devices[how] = Bootstrapper(n, d, cfg, shards=2, seed=1, device=args.device)
        for shard in devices[how].shards:
            shard.cache.cuda_matmul = how
    agree = {how: EngineAgreement(n) for how in CUDA_MATMULS}
    for _ in range(epochs):
        feats = torch.cat([base, torch.randn(n - n // 2, d, generator=gen)])
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch):
            ids = order[lo : lo + batch]
            ref = cpu.step(ids, feats[ids])
            for how, engine in devices.items():
                agree[how].step(ids, ref, engine.step(ids, feats[ids].to(args.device)))
        cpu.end_epoch()
        for how, engine in devices.items():
            engine.end_epoch()
            agree[how].epoch(cpu, engine)
    out.update({"n": n, "d": d, "epochs": epochs, "cache_dtype": "float16"})
    for how in CUDA_MATMULS:
        out.update(agree[how].summary(prefix=f"{how}_"))
    # the headline: the way the cache multiplies by default
    for key in ("ids_equal", "window_equal", "plan_equal", "topk_near_tied_rows",
                "max_sim_diff"):
        out[f"engine_{key}"] = out[f"{DEFAULT_CUDA_MATMUL}_{key}"]


def query_ms(cache: SimilarityCache, q: torch.Tensor, ids: torch.Tensor, k: int,
             repeats: int) -> float:
    return round(timed_ms(lambda: cache.query(q, ids, k), cache.device.type, repeats), 3)


def phase_query(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """ms per query for each way of multiplying; recall of float16 against float32."""
    device = args.device
    n, dims, batches, repeats = ((20_000, (16, 64), (8, 64), 2) if args.quick
                                 else (IMAGENET_N, (384, 2048), (128, 1024), 5))
    k = 10
    out.update({"n": n, "k": k})
    for d in dims:
        feats_at = clustered(n, d, device, seed=d)
        half = SimilarityCache(0, n, d, dtype="float16", device=device)
        full = SimilarityCache(0, n, d, dtype="float32", device=device)
        fill_cache(half, feats_at)
        fill_cache(full, feats_at)
        out[f"d{d}_fp16_gb"] = round(half.rows.numel() * 2 / 1e9, 3)
        for b in batches:
            gen = torch.Generator(device=device).manual_seed(b)
            ids = torch.randint(0, n, (b,), generator=gen, device=device)
            # queries near stored rows, as a training step's anchors are
            q = half.rows[ids].float() + 0.05 * torch.randn(b, d, generator=gen, device=device)
            truth = full.query(q, ids, k).ids
            reset_peak(device)
            for how in CUDA_MATMULS:
                half.cuda_matmul = how
                key = f"d{d}_b{b}_{how}"
                out[f"{key}_ms"] = query_ms(half, q, ids, k, repeats)
                got = half.query(q, ids, k).ids
                hits = (got.unsqueeze(2) == truth.unsqueeze(1)).any(2).float().mean()
                out[f"{key}_recall"] = round(float(hits), 5)
            out[f"d{d}_b{b}_peak_gb"] = peak_gb(device)
            out[f"d{d}_b{b}_fp32_ms"] = query_ms(full, q, ids, k, repeats)
            ms = {how: out[f"d{d}_b{b}_{how}_ms"] for how in CUDA_MATMULS}
            out[f"d{d}_b{b}_faster"] = min(ms, key=ms.__getitem__)
        del half, full
        reset_peak(device)


def phase_step(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """images/s of a DINO step without and with the cache's work, per backbone and dtype."""
    device = args.device
    if args.quick:
        backbones, size, batch, steps, n = ["cnn_tiny_cpu"], 32, 16, 2, 4096
        precisions = ["fp32", "bf16"]
    else:
        backbones, size, batch, steps, n = (["vit_small_patch16_224", "resnet50"], 224, 128,
                                            10, IMAGENET_N)
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    out.update({"image_size": size, "batch": batch, "timed_steps": steps, "cache_rows": n,
                "tf32": device == "cuda", "cudnn_benchmark": device == "cuda"})
    gen = torch.Generator(device=device).manual_seed(0)
    views = [torch.randn(batch, 3, size, size, generator=gen, device=device) for _ in range(4)]
    with gpu_speed_settings(device):
        for backbone in backbones:
            method = build_dino(backbone, size, batch, args.quick).to(device)
            cfg = BootstrapConfig(mode="adasim", window=2, topk=10, cache_dtype="float16")
            boot = Bootstrapper(n, method.feat_dim, cfg, shards=1, device=device)
            fill_cache(boot.shards[0].cache, clustered(n, method.feat_dim, device, seed=1))
            order = torch.randperm(n)
            for prec in precisions:
                reset_peak(device)
                bare, cached = time_steps(method, prec, views, boot, order, steps, device)
                key = f"{backbone}_{prec}"
                out[f"{key}_images_per_s"] = round(batch * 1000 / bare, 1)
                out[f"{key}_with_cache_images_per_s"] = round(batch * 1000 / cached, 1)
                out[f"{key}_adasim_share"] = round(max(0.0, 1 - bare / cached), 4)
                out[f"{key}_peak_gb"] = peak_gb(device)
            del method, boot
            reset_peak(device)


def time_steps(method: torch.nn.Module, prec: str, views: list[torch.Tensor],
               boot: Bootstrapper, order: torch.Tensor, steps: int, device: str
               ) -> tuple[float, float]:
    """ms per DINO step in precision ``prec``, without and with the cache's work (query and
    write of the anchors' teacher features, the window record) after it."""
    from adasim_ray.methods import train_step

    optimizer = method.build_optimizer()
    scaler = torch.amp.GradScaler(device) if prec == "fp16" else None
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(prec)
    batch, n = len(views[0]), boot.num_images
    it = 0

    def one_step(with_cache: bool) -> None:
        nonlocal it
        out = train_step(method, optimizer, views[it % 2], views[2 + it % 2], it, scaler,
                         amp_dtype)
        if with_cache:
            lo = (it * batch) % (n - batch)
            boot.step(order[lo : lo + batch], out.anchor_feature)
        it += 1

    bare = timed_ms(lambda: one_step(False), device, steps, warmup=3)
    cached = timed_ms(lambda: one_step(True), device, steps, warmup=1)
    return bare, cached


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase_ddp(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """What the Train worker does with its process group, on one rank with plain torch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from adasim_ray.methods import train_step

    device = args.device
    gpu = device == "cuda"
    backend = "nccl" if gpu else "gloo"
    if gpu:
        torch.cuda.set_device(0)  # NCCL's communicator binds to the current device
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        backbone, size, batch = ("cnn_tiny_cpu", 32, 8) if args.quick else ("resnet50", 224, 32)
        # 5 steps, all inside the first epoch, whose last layer is frozen
        method = build_dino(backbone, size, batch, args.quick, iters_per_epoch=10,
                            freeze_last_layer=1, clip_grad=3.0)
        if gpu:  # as the Train worker does; SyncBatchNorm runs on GPUs only
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        syncbn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in method.modules())
        method = method.to(device)
        model = DistributedDataParallel(method, device_ids=[0] if gpu else None)
        optimizer = method.build_optimizer()
        scaler = torch.amp.GradScaler("cuda") if gpu else None
        amp_dtype = torch.float16 if gpu else None
        last = [p for name, p in method.named_parameters()
                if "last_layer" in name and name.startswith("student")]
        frozen_none, others_have_grads, skipped = True, True, 0
        gen = torch.Generator(device=device).manual_seed(0)
        for it in range(5):
            a, p = (torch.randn(batch, 3, size, size, generator=gen, device=device)
                    for _ in range(2))
            before = scaler.get_scale() if scaler is not None else None
            train_step(model, optimizer, a, p, it, scaler, amp_dtype)
            frozen_none &= bool(last) and all(q.grad is None for q in last)
            others_have_grads &= any(q.grad is not None for name, q in method.named_parameters()
                                     if "last_layer" not in name and q.requires_grad)
            if scaler is not None and scaler.get_scale() < before:
                skipped += 1
        t = torch.arange(4, device=device, dtype=torch.float32) + 1
        parts = [torch.empty_like(t)]
        dist.all_gather(parts, t)
        gathered = [torch.empty_like(t)]
        dist.gather(t, gather_list=gathered, dst=0)
        out.update({
            "backend": backend, "syncbn_modules": syncbn, "amp": "fp16" if gpu else "off",
            "steps": 5, "frozen_grads_none": frozen_none,
            "other_grads_present": others_have_grads,
            "scaler_scale": scaler.get_scale() if scaler is not None else None,
            "skipped_steps": skipped if scaler is not None else None,
            "all_gather_ok": torch.equal(parts[0], t) and parts[0].device.type == device,
            "gather_ok": torch.equal(gathered[0], t) and gathered[0].device.type == device,
        })
    finally:
        dist.destroy_process_group()


# -- the ray phase -------------------------------------------------------------------------

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


def ray_run(args: argparse.Namespace, data: str, backbone: str, out: Path) -> dict[str, Any]:
    """Epoch 1, a checkpoint, the run stopped; then resumed for epoch 2."""
    from adasim_ray.config import load_config
    from adasim_ray.rundir.logs import resumes
    from adasim_ray.rundir.metrics import MetricsLog
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


def bare_loop(args: argparse.Namespace, data: str, backbone: str) -> float:
    """images/s of ``train_step`` alone on the same model, batch and views (made beforehand
    on the CPU as uint8, normalised on the device as the Train worker does)."""
    from adasim_ray.config import load_config
    from adasim_ray.methods import train_step
    from adasim_ray.recipe import build_model, make_views, open_train_source

    device = args.device
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
    t0 = 0.0
    for i in range(args.bare_steps + 3):
        if i == 3:  # three warm-up steps (kernel selection, allocator)
            sync(device)
            t0 = time.perf_counter()
        a, p = batches[i % len(batches)]
        train_step(method, optimizer, views.normalize(a), views.normalize(p),
                   i % method.total_iters, scaler, amp_dtype)
    sync(device)
    return args.bare_steps * args.batch / (time.perf_counter() - t0)


def dashboard_missing() -> str | None:
    """Why Ray's dashboard cannot start here (gpu-kit leaves its packages out), or None."""
    from ray._private.utils import get_dashboard_dependency_error

    err = get_dashboard_dependency_error()
    return None if err is None else str(err)


@contextlib.contextmanager
def local_ray(args: argparse.Namespace) -> Iterator[str]:
    """The project's local Ray (``start_local_ray``), without the dashboard where its
    packages are missing: ``start_local_ray`` asks for it, and Ray refuses to start then."""
    import ray

    from adasim_ray.train.run import start_local_ray

    if ray.is_initialized():  # e.g. the test session's: used, left running
        yield "as started by the caller"
        return
    missing = dashboard_missing()
    init = ray.init
    if missing:
        def init_without_dashboard(*a: Any, **kw: Any) -> Any:
            return init(*a, **{**kw, "include_dashboard": False})

        ray.init = init_without_dashboard
    try:
        start_local_ray(num_cpus=2 if args.quick else None)
    finally:
        ray.init = init
    try:
        yield "off (" + missing.splitlines()[0] + ")" if missing else "on"
    finally:
        ray.shutdown()


def phase_ray(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Today's resume run on a local Ray, and the bare loop of the same step."""
    if args.quick:
        backbone, args.images, args.batch, args.bare_steps = "cnn_tiny_cpu", 64, 16, 2
        args.fetch, args.size, jpeg_size = 1, 32, (64, 48)
    else:
        backbone, args.images, args.batch, args.bare_steps = "vit_small_patch16_224", 1024, 128, 20
        args.fetch, args.size, jpeg_size = 8, 224, (500, 375)
    work = Path(args.keep or tempfile.mkdtemp(prefix="adasim-gpu-check-"))
    try:
        data = work / "jpegs"
        if not data.exists():
            make_jpeg_folder(data, args.images, jpeg_size)
        with local_ray(args) as dashboard:
            out["dashboard"] = dashboard
            run = ray_run(args, str(data), backbone, work / "runs")
        bare = bare_loop(args, str(data), backbone)
        run["bare_images_per_s"] = bare
        run["ray_vs_bare"] = run["ray_images_per_s"] / bare
        out["backbone"] = backbone
        out.update(run)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def ray_importable() -> bool:
    try:
        importlib.import_module("ray")
    except ImportError:
        return False
    return True


def phase_ray_if_present(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if not ray_importable():
        out["skipped"] = ("Ray does not import here; bring it with ../shared/tools/gpu-kit "
                          "(docs/gpus.md)")
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    phase_ray(args, out)


PHASE_FUNCTIONS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], None]] = {
    "env": phase_env, "engine": phase_engine, "query": phase_query, "step": phase_step,
    "ddp": phase_ddp, "ray": phase_ray_if_present,
}


if __name__ == "__main__":
    main()
