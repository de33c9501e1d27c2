"""Benchmark of the engine at ImageNet scale: cache query, partner plan, bytes per image.

Side by side in one run, on the same random unit vectors:

- the query + top-K of a batch against the whole cache, with one shard and with S shards
  merged, against faiss-cpu ``IndexFlatIP.search`` and against the bare matrix product (GFLOP/s);
- the partner plan of a whole epoch from a full window (N x w x K): seconds and peak memory;
- bytes of bootstrapping state per image.

The last line printed is one JSON object (keys: query_s, query_sharded_s, faiss_s,
ratio_vs_faiss, matmul_s, matmul_gflops, matmul_fraction, plan_s, plan_peak_ratio,
bytes_per_image, ...). Targets: ratio_vs_faiss <= 1.0, matmul_fraction >= 0.7, plan_s < 25 on
2 cores with plan_peak_ratio <= 1.25 (``plan_target_met``); the plan on one thread
(``plan_one_thread_s``) and of mode ``none`` (``plan_none_s``) are measured beside it.

    python benchmarks/cache_query.py            # N = 1,281,167, d = 384, w = 50, K = 10
    python benchmarks/cache_query.py --quick    # N = 50,000, w = 10: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch
import torch.nn.functional as F

from adasim_ray.engine import BootstrapConfig, BootstrapShard, SimilarityCache, merge_topk
from adasim_ray.engine.partners import plan_window
from adasim_ray.engine.window import NeighbourWindow


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def random_unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, d)
    for lo in range(0, n, 262144):
        hi = min(lo + 262144, n)
        out[lo:hi] = F.normalize(torch.randn(hi - lo, d, generator=gen), dim=1)
    return out


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the maximum seen."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def bench_query(args: argparse.Namespace) -> dict[str, float]:
    import faiss

    n, d, b, k = args.n, args.dim, args.batch, args.topk
    rows = random_unit_rows(n, d, seed=0)
    queries = F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(1)), dim=1)
    ids = torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(2))

    matmul_s, _ = best_time(lambda: queries @ rows.T, args.repeats)
    flops = 2.0 * b * n * d

    def make_cache(lo: int, hi: int) -> SimilarityCache:
        cache = SimilarityCache(lo, hi, d, dtype="float32")
        cache.write(torch.arange(lo, hi), rows[lo:hi])
        return cache

    whole = make_cache(0, n)
    query_s, top = best_time(lambda: whole.query(queries, ids, k), args.repeats)
    whole = None  # free its rows before the next copy
    bounds = [round(s * n / args.shards) for s in range(args.shards + 1)]
    shards = [make_cache(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    sharded_s, merged = best_time(
        lambda: merge_topk([c.query(queries, ids, k) for c in shards], ids, k), args.repeats
    )
    shards = []

    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(d)
    index.add(rows.numpy())
    faiss_s, (_, faiss_ids) = best_time(lambda: index.search(queries.numpy(), k), args.repeats)
    index = None
    agree = float((top.ids == torch.from_numpy(faiss_ids)).float().mean())
    return {
        "n": n,
        "dim": d,
        "batch": b,
        "topk": k,
        "shards": args.shards,
        "query_s": query_s,
        "query_sharded_s": sharded_s,
        "sharded_equals_whole": bool(torch.equal(merged.ids, top.ids)),
        "faiss_s": faiss_s,
        "ratio_vs_faiss": query_s / faiss_s,
        "ids_agree_with_faiss": agree,
        "matmul_s": matmul_s,
        "matmul_gflops": flops / matmul_s / 1e9,
        "query_gflops": flops / query_s / 1e9,
        "matmul_fraction": matmul_s / query_s,
    }


def bench_plan(args: argparse.Namespace) -> dict[str, float]:
    n, w, k = args.n, args.window, args.topk
    win = NeighbourWindow(0, n, window=w, topk=k, sim_dtype="float16")
    gen = torch.Generator().manual_seed(3)
    step = 65536
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        for slot in range(w):
            nbr = torch.randint(0, n, (hi - lo, k), generator=gen, dtype=torch.int64)
            # half of the images rank themselves first, as a trained network does
            self_first = torch.rand(hi - lo, generator=gen) < 0.5
            nbr[:, 0] = torch.where(self_first, torch.arange(lo, hi), nbr[:, 0])
            sims = torch.sort(torch.rand(hi - lo, k, generator=gen), dim=1, descending=True)[0]
            win.ids[lo:hi, slot] = nbr.to(torch.int32)
            win.sims[lo:hi, slot] = sims.half()
    win.seen.fill_(True)
    win.epochs_closed = w
    win._slot_open = False
    cfg = BootstrapConfig(mode="adasim", tau=0.2, window=w, topk=k)
    window_bytes = win.nbytes()
    threads = torch.get_num_threads()
    with PeakRss() as rss:
        before = rss_bytes()
        t0 = time.perf_counter()
        partners, stats = plan_window(win, cfg, threads=threads)
        plan_s = time.perf_counter() - t0
    extra = max(0, rss.peak - before)
    # side by side: the same plan on one thread (the plan before it used the cores), and
    # mode none without labels, which reads no support
    t0 = time.perf_counter()
    one, _ = plan_window(win, cfg, threads=1)
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan_window(win, BootstrapConfig(mode="none", window=w, topk=k), threads=threads)
    none_s = time.perf_counter() - t0
    peak_ratio = (window_bytes + extra) / window_bytes
    return {
        "plan_n": n,
        "plan_window": w,
        "plan_threads": threads,
        "plan_s": plan_s,
        "plan_one_thread_s": one_s,
        "plan_speedup": one_s / plan_s,
        "plan_same_partners": bool(torch.equal(one, partners)),
        "plan_none_s": none_s,
        "plan_window_bytes": window_bytes,
        "plan_extra_peak_bytes": extra,
        "plan_peak_ratio": peak_ratio,
        "plan_bootstrap_ratio": stats.metrics()["bootstrap_ratio"],
        "plan_target_met": plan_s < 25 and peak_ratio <= 1.25,
    }


def bytes_per_image(args: argparse.Namespace) -> dict[str, float]:
    n = 4096
    out = {}
    for dtype in ("float16", "float32"):
        cfg = BootstrapConfig(mode="adasim", tau=0.2, window=args.window, topk=args.topk,
                              cache_dtype=dtype, sim_dtype="float16")
        shard = BootstrapShard(n, 0, n, args.dim, cfg)
        out[dtype] = shard.nbytes() / n
    return {"bytes_per_image": out["float16"], "bytes_per_image_fp32_cache": out["float32"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_281_167, help="images in the cache (N)")
    parser.add_argument("--dim", type=int, default=384, help="feature dimension d")
    parser.add_argument("--batch", type=int, default=256, help="queries per step")
    parser.add_argument("--topk", type=int, default=10, help="K")
    parser.add_argument("--window", type=int, default=50, help="w")
    parser.add_argument("--shards", type=int, default=4, help="S for the sharded query")
    parser.add_argument("--repeats", type=int, default=3, help="timings keep the best of these")
    parser.add_argument("--quick", action="store_true", help="N=50,000, w=10: a smoke test")
    parser.add_argument("--parts", default="query,plan,state",
                        help="which parts to run (default all: query,plan,state)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.window, args.repeats = 50_000, 10, 2
    result: dict[str, object] = {"threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    wanted = set(args.parts.split(","))
    for name, part in (("query", bench_query), ("plan", bench_plan), ("state", bytes_per_image)):
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        result.update(part(args))
        print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
