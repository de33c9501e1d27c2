"""The similarity cache Z of Section 3.3.1: one L2-normalised feature per data set image.

A :class:`SimilarityCache` holds the rows of a contiguous range of image ids, so that S of them
shard a cache that is too large for one device. Querying a batch returns each row's local top-K
(Eq. 4, restricted to the K best candidates as in Section 3.4); :func:`merge_topk` combines the
local answers of all shards into exactly the top-K of the whole cache.

Order inside a training step (Algorithm 1, lines 5 and 6): the batch is queried *before* its own
rows are written, so image i meets its own stale entry from the previous epoch. That is what
gives the "argmax == self" test its meaning. Rows never written yet are not candidates at all
(rather than the zero rows of the authors' zero-initialised cache, whose similarity 0 would
outrank every negative similarity during the first epoch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adasim_ray.engine.ordering import exact_topk, top_by_key

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TopK:
    """The K best neighbours of a batch of anchors, in the engine's order (see ``ordering``).

    Attributes:
        sims: (B, K) float32 cosine similarities; ``-inf`` in empty slots.
        ids: (B, K) int64 global image ids; ``-1`` in empty slots.
    """

    sims: torch.Tensor
    ids: torch.Tensor


def merge_topk(parts: list[TopK], self_ids: torch.Tensor, k: int) -> TopK:
    """Merge the local top-K answers of several shards (or chunks) into the global top-K.

    Since every shard ranks with the same total order, the K best of the union of the shards'
    K best are exactly the K best of the whole cache.

    Examples:
        >>> a = TopK(torch.tensor([[0.9, 0.1]]), torch.tensor([[4, 5]]))
        >>> b = TopK(torch.tensor([[0.5, 0.4]]), torch.tensor([[10, 11]]))
        >>> merge_topk([a, b], torch.tensor([0]), 2).ids.tolist()
        [[4, 10]]
    """
    sims = torch.cat([p.sims for p in parts], dim=1)
    ids = torch.cat([p.ids for p in parts], dim=1)
    top_sims, top_ids = top_by_key(sims, ids, self_ids, k)
    return TopK(top_sims, top_ids)


#: Cache rows scored at a time by a query: the (B x rows) similarity block it holds.
QUERY_CHUNK_ROWS = 32768

#: How a cache on a GPU multiplies half-precision rows (both ways give float32 similarities of
#: the same rounded inputs, so both equal the CPU's up to summation order):
#: ``"mixed"``: half inputs, float32 output (cuBLAS, tensor cores; ``torch.mm``'s ``out_dtype``,
#: torch >= 2.8; ``"upcast"`` where that is missing); ``"upcast"``: each block of rows turned to
#: float32 and multiplied in IEEE float32. ``benchmarks/gpu_check.py`` (phases ``engine`` and
#: ``query``) times both and compares each with the CPU.
CUDA_MATMULS = ("mixed", "upcast")
DEFAULT_CUDA_MATMUL = "mixed"


def mixed_matmul_available() -> bool:
    """Whether this torch has the half x half -> float32 product (``aten::mm.dtype``)."""
    return "dtype" in torch.ops.aten.mm.overloads()


@contextlib.contextmanager
def ieee_fp32_matmul() -> Iterator[None]:
    """CUDA float32 matrix products in full IEEE float32 inside, whatever the TF32 (or bfloat16)
    setting outside: ``torch.backends.cuda.matmul.allow_tf32``, its ``fp32_precision`` or
    ``torch.set_float32_matmul_precision``. The setting is restored on the way out.

    TF32 keeps 10 mantissa bits, "medium" precision 7: either would round a float32 cache's
    rows, or a float16 cache's rows to bfloat16, before the product, and a GPU's partners would
    then differ from a CPU's. cuBLAS reads the setting when a product is launched, so setting
    it around the launch suffices. It is process-wide: a thread that multiplies meanwhile runs
    in IEEE float32 too (slower, never less exact).
    """
    # Since torch 2.9 there are two APIs (the legacy precision and the new per-backend
    # `fp32_precision`), and a CUDA product refuses to run while they disagree: the legacy
    # setter sets both in agreement, so it is the one used inside; the new values are put back
    # after the legacy one. A legacy value that cannot be read (the two APIs disagreed before)
    # stays "highest", which agrees with whatever the new API says for other backends.
    backends = [(torch.backends.cuda.matmul, "fp32_precision")]
    mkldnn = getattr(torch.backends, "mkldnn", None)
    if mkldnn is not None and hasattr(mkldnn, "matmul"):
        backends.append((mkldnn.matmul, "fp32_precision"))
    saved_new = [(obj, getattr(obj, name)) for obj, name in backends if hasattr(obj, name)]
    try:
        saved_legacy: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:
        saved_legacy = None
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if saved_legacy is not None:
            torch.set_float32_matmul_precision(saved_legacy)
        for obj, value in saved_new:
            obj.fp32_precision = value


def similarities(q: torch.Tensor, rows: torch.Tensor, cuda_matmul: str = DEFAULT_CUDA_MATMUL
                 ) -> torch.Tensor:
    """(B, C) float32 cosine similarities q @ rows^T of queries and rows both in the cache's
    storage dtype (Eq. 4 for one block of rows).

    Both devices multiply the same rounded values and return float32: a product of two half
    (or bfloat16) values is exact in float32, so the CPU and a GPU differ only in summation
    order (a few 1e-7 at d = 384), never by the 5e-4 steps of a float16 result. A CPU has no
    fast half product: it multiplies in float32.

    Examples:
        >>> q = torch.tensor([[0.6, 0.8]], dtype=torch.float16)
        >>> similarities(q, q).dtype
        torch.float32
    """
    if q.dtype != rows.dtype:
        raise ValueError(f"query dtype {q.dtype} differs from the rows' {rows.dtype}")
    if cuda_matmul not in CUDA_MATMULS:
        raise ValueError(f"cuda_matmul must be one of {CUDA_MATMULS}, got {cuda_matmul!r}")
    if rows.device.type != "cuda":
        return q.float() @ rows.float().T
    with ieee_fp32_matmul():
        if rows.dtype != torch.float32 and cuda_matmul == "mixed" and mixed_matmul_available():
            return torch.mm(q, rows.T, out_dtype=torch.float32)
        return q.float() @ rows.float().T


class SimilarityCache:
    """Rows ``[start, stop)`` of the cache Z (N x d), stored L2-normalised.

    Args:
        start: first global image id owned by this shard.
        stop: one past the last owned id.
        dim: feature dimension d.
        dtype: storage dtype, ``"float32"``, ``"float16"`` or ``"bfloat16"``. A query is rounded
            to it as the rows are, and its similarities come out in float32 on every device
            (see :func:`similarities`), so a GPU finds the CPU's neighbours.
        device: where the rows live.
        chunk_rows: rows multiplied at a time, which bounds the (B x chunk) similarity block.

    Attributes:
        cuda_matmul: how a GPU multiplies half rows (``CUDA_MATMULS``); the CPU ignores it.

    Examples:
        >>> cache = SimilarityCache(0, 4, dim=2)
        >>> ids = torch.tensor([0, 1])
        >>> _ = cache.query_and_write(ids, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), k=2)
        >>> cache.query(torch.tensor([[1.0, 0.1]]), torch.tensor([2]), k=1).ids.tolist()
        [[0]]
    """

    def __init__(
        self,
        start: int,
        stop: int,
        dim: int,
        dtype: str = "float32",
        device: str | torch.device = "cpu",
        chunk_rows: int = QUERY_CHUNK_ROWS,
    ) -> None:
        if start < 0 or stop <= start:
            raise ValueError(f"cache shard range [{start}, {stop}) must be non-empty and >= 0")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.start, self.stop, self.dim = start, stop, dim
        self.dtype_name = dtype
        self.device = torch.device(device)
        self.chunk_rows = chunk_rows
        self.cuda_matmul = DEFAULT_CUDA_MATMUL
        self.rows = torch.zeros(stop - start, dim, dtype=CACHE_DTYPES[dtype], device=self.device)
        self.written = torch.zeros(stop - start, dtype=torch.bool, device=self.device)
        self._all_written = False

    @property
    def size(self) -> int:
        return self.stop - self.start

    def owns(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the ids in this shard's range."""
        return (ids >= self.start) & (ids < self.stop)

    def _check_batch(self, feats: torch.Tensor, ids: torch.Tensor) -> None:
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(
                f"feats must be (B, {self.dim}), got {tuple(feats.shape)} (d mismatch)"
            )
        if ids.ndim != 1 or ids.shape[0] != feats.shape[0]:
            raise ValueError(f"ids must be (B,) with B={feats.shape[0]}, got {tuple(ids.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError("feats contain NaN or inf: the network's features diverged")

    def query(self, feats: torch.Tensor, self_ids: torch.Tensor, k: int) -> TopK:
        """The local top-K of Eq. 4, m_i(j) = z_i^T Z_j, over this shard's written rows.

        Args:
            feats: (B, d) features z_i (normalised here).
            self_ids: (B,) global id of each query's own image (it is *not* excluded: the
                adaptive test needs it; the tie order ranks it first).
            k: neighbours to return; the shard returns fewer real ones if it has fewer rows.
        """
        if k < 1:
            raise ValueError(f"k (topk) must be >= 1, got {k}")
        self._check_batch(feats, self_ids)
        q = self.as_rows(feats)
        self_ids = self_ids.to(device=self.device, dtype=torch.int64)
        parts: list[TopK] = []
        for lo in range(0, self.size, self.chunk_rows):
            hi = min(lo + self.chunk_rows, self.size)
            sims = similarities(q, self.rows[lo:hi], self.cuda_matmul)
            if not self._all_written:
                sims.masked_fill_(~self.written[lo:hi], float("-inf"))
            parts.append(self._chunk_topk(sims, lo, self_ids, k))
        return parts[0] if len(parts) == 1 else merge_topk(parts, self_ids, k)

    def as_rows(self, feats: torch.Tensor) -> torch.Tensor:
        """Features as the cache holds them, and as a query meets them: L2-normalised, then
        rounded to the storage dtype, on the cache's device.

        The norm is taken in float64: a float32 norm differs between a CPU and a GPU in its
        last bit (another summation order), and an element next to a float16 rounding boundary
        then rounds the other way (emulated with two summation orders at d = 384: a quarter of
        the rows' norms differed, 3.5 elements in 10^5 rounded apart); in float64 such a
        difference lies far below the float16 step, so both devices hold the same rows.
        """
        unit = F.normalize(feats.to(device=self.device, dtype=torch.float64), dim=1)
        return unit.to(self.rows.dtype)

    def _chunk_topk(self, sims: torch.Tensor, lo: int, self_ids: torch.Tensor, k: int) -> TopK:
        """Top-K of one (B, C) block in the engine's order (exact under ties)."""
        offset = self.start + lo
        vals, ids = exact_topk(sims, self_ids, k, lambda rows, pos: pos + offset)
        return TopK(vals, ids)

    def write(self, ids: torch.Tensor, feats: torch.Tensor) -> None:
        """Store the normalised features of the owned ids among ``ids`` (Algorithm 1, line 6).

        Ids outside this shard are ignored (another shard owns them); a batch that names the
        same image twice is refused, since which copy would win is arbitrary.
        """
        self._check_batch(feats, ids)
        ids = ids.to(device=self.device, dtype=torch.int64)
        if torch.unique(ids).numel() != ids.numel():
            raise ValueError(
                "ids: a batch names the same image twice; cache writes need unique ids"
            )
        mine = self.owns(ids)
        if not mine.any():
            return
        local = ids[mine] - self.start
        self.rows[local] = self.as_rows(feats.to(self.device)[mine])
        self.written[local] = True
        if not self._all_written:
            self._all_written = bool(self.written.all())

    def query_and_write(self, ids: torch.Tensor, feats: torch.Tensor, k: int) -> TopK:
        """Query the batch against this shard, then write the rows it owns: one step's work."""
        top = self.query(feats, ids, k)
        self.write(ids, feats)
        return top

    def state_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "stop": self.stop,
            "dim": self.dim,
            "dtype": self.dtype_name,
            "rows": self.rows.cpu(),
            "written": self.written.cpu(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        expect = (self.start, self.stop, self.dim, self.dtype_name)
        got = (state["start"], state["stop"], state["dim"], state["dtype"])
        if got != expect:
            raise ValueError(f"cache state for (start, stop, dim, dtype)={got}, expected {expect}")
        self.rows.copy_(state["rows"])  # type: ignore[arg-type]
        self.written.copy_(state["written"])  # type: ignore[arg-type]
        self._all_written = bool(self.written.all())
