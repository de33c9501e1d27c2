"""Partner plans: Eq. 11 windowed scores and the adaptive rule of Algorithm 1 (lines 7 to 18).

For every image i of an epoch this module chooses the partner j* whose augmented view t'(x_j*)
is paired with the anchor view t(x_i). Four modes, one switch (``BootstrapConfig.mode``):

- ``none``: the plain baseline, j* = i always.
- ``nn``: straightforward bootstrapping (the paper's "+ NN", Section 4.3): the top-1 neighbour of
  the most recent epoch, *excluding* i itself.
- ``adasim``: Eq. 11 over the window of past epochs, then the adaptive test: if i itself ranks
  first, sample j* from softmax(score / tau) over the support (i included), else j* = i. During
  the first w epochs, j* = i.
- ``oracle``: the supervised oracle of Section 4.4 (Table 1), for labelled data sets: a random
  image of i's class, or j* = i with a probability going linearly from 1 to ``oracle_p``
  (``adasim_ray.engine.oracle``). The window is still filled, for the metrics.

Plans are computed from *past* epochs only (as the authors' code does), so the whole epoch's
pairing is known when the epoch starts and partner images can be fetched ahead of time.
Everything is vectorised over images, in chunks of rows so that memory stays a small multiple of
the window's own size, and runs on the host, where the window lives (``window.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch

from adasim_ray.engine.config import BootstrapConfig
from adasim_ray.engine.oracle import ClassMembers, oracle_partners
from adasim_ray.engine.ordering import INVALID_ID, exact_topk
from adasim_ray.engine.window import NeighbourWindow

_ID_SENTINEL = 0x7FFFFFFF  # above every image id (ids are < 2^31): empty entries sort last
NOISE_BLOCK_ROWS = 65536
"""Gumbel noise is drawn in fixed global blocks of image ids, so a plan does not depend on how
the ids are split into shards or chunks."""


@dataclass
class PlanStats:
    """Counts behind the training metrics of Fig. 3; counts add up across shards.

    ``bootstrap_ratio`` is the share of pairs with j* != i; ``nn_top1`` the share with
    label(j*) == label(i); ``nn2_top1`` the same for the best-ranked support member other than
    j* (images with a one-element support are left out of it). In ``oracle`` mode ``nn_top1`` is
    1 by construction (j* shares i's class); ``nn2_top1`` still measures the latent space.
    """

    images: int = 0
    bootstrapped: int = 0
    nn_correct: int = 0
    nn_total: int = 0
    nn2_correct: int = 0
    nn2_total: int = 0

    def __add__(self, other: PlanStats) -> PlanStats:
        return PlanStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def metrics(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "bootstrap_ratio": ratio(self.bootstrapped, self.images),
            "nn_top1": ratio(self.nn_correct, self.nn_total),
            "nn2_top1": ratio(self.nn2_correct, self.nn2_total),
        }


def windowed_support(
    ids: torch.Tensor, sims: torch.Tensor, self_ids: torch.Tensor, window: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11 scores over the union support S_union, keeping its K best members.

    score_i(j) = (1/w) * sum over the window's epochs of 1[j in S^(e)] * m_i^(e)(j).

    Args:
        ids: (n, M) neighbour ids of the window's epochs, flattened (M = epochs x K), ``-1`` empty.
        sims: (n, M) their similarities.
        self_ids: (n,) the anchor images.
        window: w (the divisor, also while fewer than w epochs are stored).
        k: support size kept.

    Returns:
        (support_ids (n, k) int64, scores (n, k) float32), ranked by (score desc, i first,
        id asc); empty slots hold id -1 and score -inf.
    """
    n, m = ids.shape
    if m == 0:
        empty = torch.full((n, k), INVALID_ID, dtype=torch.int64, device="cpu")
        return empty, torch.full((n, k), -torch.inf, device="cpu")
    sentinel = _ID_SENTINEL
    # Group equal ids with one sort of packed (id, similarity bits) keys: numpy's vectorised
    # integer sort is several times faster than an argsort plus gathers. Inside a group the
    # similarities come in the order of their bits, the same wherever the group sits, so
    # equal multisets of similarities give bit-identical sums (exact ties stay exact ties).
    # The keys are built and split in numpy: after the sort, each int64 key is read back as
    # its two int32 halves (the id and the similarity's bits) without shifts or masks.
    id_np = ids.to(torch.int64).numpy()
    packed = np.where(id_np < 0, sentinel, id_np) << 32
    packed |= sims.to(torch.float32).contiguous().numpy().view(np.uint32)
    packed.sort(axis=1)
    halves = packed.view(np.int32).reshape(n, m, 2)
    low, high = (0, 1) if np.little_endian else (1, 0)
    sorted_ids = torch.from_numpy(halves[:, :, high])  # int32: ids are < 2^31
    sorted_sims = torch.from_numpy(halves[:, :, low].view(np.float32))
    starts = torch.ones(n, m, dtype=torch.int32, device="cpu")
    starts[:, 1:] = (sorted_ids[:, 1:] != sorted_ids[:, :-1]).to(torch.int32)
    group = starts.cumsum(dim=1, dtype=torch.int32).to(torch.int64) - 1
    totals = torch.zeros(n, m, dtype=torch.float32, device="cpu")
    totals.scatter_add_(1, group, sorted_sims)
    group_ids = torch.full((n, m), sentinel, dtype=torch.int32, device="cpu")
    group_ids.scatter_(1, group, sorted_ids)
    # in place: at w = 50, K = 10 every (n, w K) temporary costs as much as an op on it
    scores = totals.div_(window).masked_fill_(group_ids == sentinel, -torch.inf)

    def ids_at(rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        found = group_ids[rows.unsqueeze(1), pos].to(torch.int64)
        return found.masked_fill_(found == sentinel, INVALID_ID)

    scores, support = exact_topk(scores, self_ids, k, ids_at)
    return support, scores


def gumbel_noise(seed: int, epoch: int, start: int, stop: int, k: int) -> torch.Tensor:
    """Standard Gumbel noise for global image ids [start, stop), (stop - start, k) float32.

    Drawn per fixed global block of ids from a generator seeded by (seed, epoch, block), so the
    noise of an image does not depend on the sharding.
    """
    parts = []
    for block in range(start // NOISE_BLOCK_ROWS, (stop - 1) // NOISE_BLOCK_ROWS + 1):
        rng = np.random.default_rng([seed, epoch, block])
        noise = rng.gumbel(size=(NOISE_BLOCK_ROWS, k)).astype(np.float32)
        lo = max(start, block * NOISE_BLOCK_ROWS) - block * NOISE_BLOCK_ROWS
        hi = min(stop, (block + 1) * NOISE_BLOCK_ROWS) - block * NOISE_BLOCK_ROWS
        parts.append(noise[lo:hi])
    return torch.from_numpy(np.concatenate(parts))


def adaptive_partners(
    support: torch.Tensor,
    scores: torch.Tensor,
    self_ids: torch.Tensor,
    tau: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """Algorithm 1, lines 13 to 17: sample j* only where i itself ranks first.

    Sampling from softmax(score / tau) uses the Gumbel-max trick: argmax(score / tau + g) with
    g ~ Gumbel(0, 1) is an exact draw. tau = 0 takes the argmax, which is i wherever the test
    passes, so tau = 0 is exactly the plain baseline (and never divides by zero).
    """
    self_ids = self_ids.to(torch.int64)
    self_first = support[:, 0] == self_ids
    if tau == 0:
        return self_ids.clone()
    logits = (scores / tau + noise).masked_fill(support == INVALID_ID, -torch.inf)
    drawn = support.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    return torch.where(self_first, drawn, self_ids)


def nearest_other(latest_ids: torch.Tensor, self_ids: torch.Tensor) -> torch.Tensor:
    """The "+ NN" partner: the best neighbour of the latest epoch that is not i (else i)."""
    self_ids = self_ids.to(torch.int64)
    other = (latest_ids != self_ids.unsqueeze(1)) & (latest_ids != INVALID_ID)
    has = other.any(dim=1)
    first = other.to(torch.int8).argmax(dim=1, keepdim=True)
    return torch.where(has, latest_ids.gather(1, first).squeeze(1), self_ids)


#: Rows of the window planned at once by one thread (see ``plan_window``).
PLAN_CHUNK_ROWS = 2048


def plan_window(
    window: NeighbourWindow,
    cfg: BootstrapConfig,
    labels: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    members: ClassMembers | None = None,
    *,
    seed: int = 0,
    epochs: int = 1,
    threads: int | None = None,
) -> tuple[torch.Tensor, PlanStats]:
    """Partners j* of the owned images for the next epoch, and the Fig. 3 counts.

    The next epoch is number ``window.epochs_closed`` (0-based); its plan only reads closed
    epochs. Args ``labels`` (N,) int64 over the whole data set (-1 = unknown) feed the metrics,
    and in ``oracle`` mode the partners (``members``: their class index, built from ``labels``
    when not given). ``seed`` seeds the sampling (the same seed and window give the same plan);
    ``epochs``, the run's length, spans the oracle's 1 -> ``oracle_p`` schedule.

    Returns:
        (partners (n,) int64 global ids, stats).

    Args ``chunk_rows`` bounds the rows processed at once (default ``PLAN_CHUNK_ROWS``);
    ``threads`` chunks are planned at once (default torch's thread
    count: the sort of Eq. 11 runs in numpy, which releases the GIL). The plan is the same
    whatever the chunks and threads. What a mode does not need is skipped: without labels
    (no metrics), ``none`` and ``nn`` read no Eq. 11 support at all.
    """
    if cfg.window != window.window or cfg.topk != window.topk:
        raise ValueError(
            f"config (w={cfg.window}, K={cfg.topk}) does not match the window "
            f"(w={window.window}, K={window.topk})"
        )
    epoch = window.epochs_closed
    threads = max(1, threads if threads is not None else torch.get_num_threads())
    if chunk_rows is None:
        # A chunk's working memory is ~10x its share of the window. 2,048 rows (~60 MB at
        # w = 50, K = 10) stay in the CPU's caches: measured on 300,000 images, one thread,
        # 5.8 s against 11.3 s with chunks of 16,384; and the plan's peak stays small.
        chunk_rows = PLAN_CHUNK_ROWS
    partners = torch.empty(window.size, dtype=torch.int64, device="cpu")
    oracle = noise = None
    if cfg.mode == "oracle":
        if labels is None and members is None:
            raise ValueError("mode 'oracle' needs the labels of the data set")
        members = members if members is not None else ClassMembers(labels)
        oracle = oracle_partners(
            members, window.start, window.stop, epoch, epochs, cfg.oracle_p, seed
        )
    bootstrapping = (cfg.mode == "adasim" and epoch >= cfg.window) or (
        cfg.mode == "nn" and epoch >= 1
    )
    if cfg.mode == "adasim" and bootstrapping and cfg.tau > 0:
        noise = gumbel_noise(seed, epoch, window.start, window.stop, cfg.topk)
    needs_support = labels is not None or cfg.mode in ("adasim", "oracle")

    def plan_chunk(lo: int) -> PlanStats:
        hi = min(lo + chunk_rows, window.size)
        self_ids = torch.arange(window.start + lo, window.start + hi, dtype=torch.int64,
                                device="cpu")
        support = scores = None
        if needs_support:
            support, scores = windowed_support(*window.rows(lo, hi), self_ids, cfg.window,
                                               cfg.topk)
        if oracle is not None:
            chosen = oracle[lo:hi]
        elif not bootstrapping:
            chosen = self_ids.clone()
        elif cfg.mode == "nn":
            chosen = nearest_other(window.latest_rows(lo, hi), self_ids)
        else:
            chosen = adaptive_partners(support, scores, self_ids, cfg.tau,
                                       None if noise is None else noise[lo:hi])
        partners[lo:hi] = chosen
        if support is None:
            return PlanStats(images=len(self_ids), bootstrapped=int((chosen != self_ids).sum()))
        return _chunk_stats(support, self_ids, chosen, labels)

    starts = range(0, window.size, chunk_rows)
    stats = PlanStats()
    if threads == 1 or len(starts) == 1:
        for lo in starts:
            stats = stats + plan_chunk(lo)
        return partners, stats
    # torch's own ops run one thread each inside the pool: the chunks are the parallelism
    with _torch_threads(1), ThreadPoolExecutor(max_workers=threads) as pool:
        for part in pool.map(plan_chunk, starts):
            stats = stats + part
    return partners, stats


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _chunk_stats(
    support: torch.Tensor,
    self_ids: torch.Tensor,
    chosen: torch.Tensor,
    labels: torch.Tensor | None,
) -> PlanStats:
    stats = PlanStats(images=len(self_ids), bootstrapped=int((chosen != self_ids).sum()))
    if labels is None:
        return stats
    own = labels[self_ids]
    known = own >= 0
    stats.nn_correct = int(((labels[chosen] == own) & known).sum())
    stats.nn_total = int(known.sum())
    # 2-NN: the best-ranked support member other than j* (Section 4.8).
    others = (support != chosen.unsqueeze(1)) & (support != INVALID_ID)
    has_second = others.any(dim=1) & known
    second = support.gather(1, others.to(torch.int8).argmax(dim=1, keepdim=True)).squeeze(1)
    second_labels = labels[second.clamp(min=0)]
    stats.nn2_correct = int(((second_labels == own) & has_second).sum())
    stats.nn2_total = int(has_second.sum())
    return stats
