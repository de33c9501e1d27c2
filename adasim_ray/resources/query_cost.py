"""The cache's work per training step, and how many shards a data set needs.

Every step, each cache shard scores the global batch of B anchors against its N_s rows: a
(B x d) by (d x N_s) matrix product, 2 B N_s d floating-point operations, then a top-K. The
shards work side by side, so the step's query time is the largest shard's.

The rate is measured, not assumed: ``benchmarks/cache_query.py`` on this project's 2-core
machine queried 256 anchors against 1,281,167 rows of d = 384 in 3.13 s (the engine's query
of a float32 cache, top-K included): 40 GFLOP/s per core. A GPU's rate is not measured yet
(``benchmarks/gpu_check.py`` measures it where a GPU is lent), so a shard on a GPU is
reported without a time.
"""

from __future__ import annotations

import math
from typing import Any

from adasim_ray.resources.memory import bootstrap_memory, largest_shard_images

#: GFLOP/s per CPU core of the cache query, measured by benchmarks/cache_query.py (above).
CPU_QUERY_GFLOPS_PER_CORE = 2 * 256 * 1_281_167 * 384 / 3.13 / 2 / 1e9
#: ``adasim-ray check``'s default budget of bytes per cache shard (``--shard-budget-gb``).
SHARD_BUDGET_BYTES = 16e9


def query_gflop_per_step(cfg: Any, num_images: int, dim: int) -> float:
    """GFLOP of the largest shard's query of one global batch."""
    return 2 * cfg.batch_size * largest_shard_images(cfg, num_images) * dim / 1e9


def cpu_query_seconds(cfg: Any, num_images: int, dim: int) -> float:
    """Seconds of the largest shard's query per step on ``ray.cache_shard_cpus`` cores (one
    at least) at the measured CPU rate."""
    cores = max(1.0, float(cfg.ray.cache_shard_cpus))
    return query_gflop_per_step(cfg, num_images, dim) / (CPU_QUERY_GFLOPS_PER_CORE * cores)


def recommended_shards(cfg: Any, num_images: int, dim: int,
                       budget: float = SHARD_BUDGET_BYTES) -> int:
    """The fewest shards whose largest holds at most ``budget`` bytes of state.

    Examples:
        >>> from types import SimpleNamespace
        >>> from adasim_ray.engine import BootstrapConfig
        >>> cfg = SimpleNamespace(adasim=BootstrapConfig(window=50, topk=10),
        ...                       ray=SimpleNamespace(cache_shards=1, cache_shard_gpus=0.0))
        >>> recommended_shards(cfg, 14_197_122, 768)  # ImageNet-21k, ViT-B/16: 65 GB in all
        5
    """
    one = bootstrap_memory(cfg, num_images, dim, shards=1)["all_shards"]
    shards = max(1, math.ceil(one / budget))
    while bootstrap_memory(cfg, num_images, dim, shards)["per_shard"]["total"] > budget:
        shards += 1
    return shards
