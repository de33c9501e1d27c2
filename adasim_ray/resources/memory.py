"""The memory of the bootstrapping state per cache shard, from the engine's storage layout.

Memory of one shard of N_s images (``adasim_ray.engine``: ``cache.py``, ``window.py``,
``shard.py``), with d the feature dimension written to the cache (the backbone's pooled
feature: 384 for ViT-S/16, 768 for ViT-B/16, 2048 for ResNet-50):

==========  ================================  ============================================
part        bytes                             where
==========  ================================  ============================================
cache Z     N_s x d x (2 fp16/bf16 | 4 fp32)  the shard actor's GPU if it has one, else RAM
written     N_s (bool)                        with Z
window      N_s x w x K x (4 int32 id +       RAM of the shard actor
            2 fp16 | 4 fp32 similarity)
seen        N_s x w (bool)                    RAM
partners    N_s x 8 (int64)                   RAM
==========  ================================  ============================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from adasim_ray.engine.cache import CACHE_DTYPES, QUERY_CHUNK_ROWS
from adasim_ray.engine.shard import shard_ranges
from adasim_ray.engine.window import SIM_DTYPES
from adasim_ray.recipe import build_backbone_for

# Bytes per element of the engine's tensors other than Z and the window's similarities
# (whose dtypes come from the config): window ids int32, masks bool, partners int64.
ID_BYTES, MASK_BYTES, PARTNER_BYTES = 4, 1, 8


@dataclass(frozen=True)
class ShardFootprint:
    """Bytes of bootstrapping state held by one shard (see the module docstring)."""

    images: int
    cache: int
    written: int
    window: int
    seen: int
    partners: int

    @property
    def total(self) -> int:
        return self.cache + self.written + self.window + self.seen + self.partners


def _element_size(dtype: Any) -> int:
    import torch

    return torch.empty(0, dtype=dtype).element_size()


def shard_footprint(
    images: int, dim: int, window: int, topk: int, cache_dtype: str, sim_dtype: str
) -> ShardFootprint:
    """Bytes of the cache rows, window and partners of a shard of ``images`` images.

    Examples:
        >>> shard_footprint(1000, 384, 50, 10, "float16", "float16").total
        3827000
    """
    z = _element_size(CACHE_DTYPES[cache_dtype])
    sim = _element_size(SIM_DTYPES[sim_dtype])
    return ShardFootprint(
        images=images,
        cache=images * dim * z,
        written=images * MASK_BYTES,
        window=images * window * topk * (ID_BYTES + sim),
        seen=images * window * MASK_BYTES,
        partners=images * PARTNER_BYTES,
    )


def bootstrap_memory(cfg: Any, num_images: int, dim: int,
                     shards: int | None = None) -> dict[str, Any]:
    """Footprint of the largest of the ``ray.cache_shards`` shards (or of ``shards``), and
    of all of them."""
    a = cfg.adasim
    shards = [
        shard_footprint(hi - lo, dim, a.window, a.topk, a.cache_dtype, a.sim_dtype)
        for lo, hi in shard_ranges(num_images, shards or cfg.ray.cache_shards)
    ]
    largest = max(shards, key=lambda s: s.total)
    return {
        "shards": len(shards),
        "feature_dim": dim,
        "cache_on": "GPU" if cfg.ray.cache_shard_gpus > 0 else "RAM",
        "per_shard": asdict(largest) | {"total": largest.total},
        "all_shards": sum(s.total for s in shards),
    }


def largest_shard_images(cfg: Any, num_images: int) -> int:
    """Images of the largest of the ``ray.cache_shards`` shards."""
    return max(hi - lo for lo, hi in shard_ranges(num_images, cfg.ray.cache_shards))


def query_block_bytes(cfg: Any, num_images: int) -> int:
    """Working memory of a shard's query of one global batch: the (B x rows) float32
    similarity block of ``QUERY_CHUNK_ROWS`` cache rows at a time, where Z lives."""
    return cfg.batch_size * min(largest_shard_images(cfg, num_images), QUERY_CHUNK_ROWS) * 4


def shard_ram_bytes(cfg: Any, num_images: int, dim: int) -> int:
    """Bytes of RAM the largest cache shard holds: all of its state and its query block,
    less Z, its written mask and the query block when they live on the shard's GPU
    (``ray.cache_shard_gpus`` > 0)."""
    s = bootstrap_memory(cfg, num_images, dim)["per_shard"]
    if cfg.ray.cache_shard_gpus > 0:
        return int(s["total"] - s["cache"] - s["written"])
    return int(s["total"] + query_block_bytes(cfg, num_images))


def human_bytes(n: float) -> str:
    """Decimal units, as the design notes quote sizes (``1.97 GB`` for 1.97e9 bytes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def feature_dim(cfg: Any, views: Any) -> int:
    """The dimension the run writes to the cache: its backbone's pooled feature (built on the
    meta device: no memory, no initialisation cost)."""
    import torch

    try:
        with torch.device("meta"):
            return build_backbone_for(cfg, views)[1]
    except Exception:  # an architecture whose init needs real tensors: build it for real
        return build_backbone_for(cfg, views)[1]
