"""Label errors and duplicates from the neighbour window and the cache (Appendix F, as a tool).

The paper's Appendix F searches for query images whose neighbours come from other classes and
finds wrongly labelled or duplicate ImageNet images. The bootstrapping state of a finished run
holds what that search needs, with nothing recomputed:

- **label suspects**: the *stable* neighbours of image i are its Eq. 11 support, scored by
  score_i(j) = (1/w) * sum over the window's epochs of 1[j in S^(e)] * m_i^(e)(j), so a
  neighbour met in every epoch of the window weighs more than one met once. Each neighbour
  j != i votes for its label with weight score_i(j); i is suspect when most of the weight goes
  to one label other than its own (a flipped label: its neighbours agree among themselves on
  the true class). Rank: that share first, then the total weight (more stable first).
- **duplicates**: the candidate pairs are the window's neighbours (each epoch's top-K is exact
  over the whole cache, so a near-identical image is there), never all N x N pairs; a pair is
  scored by the cosine of the two images' cached features Z (Section 3.3.1), with the mutual
  Eq. 11 score as a tie-breaker.

Everything is vectorised over chunks of images: O(N * w * K) work and memory.

The cache holds features of *augmented* anchor views taken at different moments of the last
epoch, so two copies of one image are near-identical there only once the features are invariant
to the augmentations. :func:`exact_window` gives the same analysis on exact features instead
(e.g. of the un-augmented images by the final network): one epoch of exact top-K neighbours, on
which exact duplicates have cosine 1. It searches all pairs (in chunks, never an N x N matrix):
O(N^2 d) work, a GPU's job at ImageNet scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adasim_ray.engine.cache import SimilarityCache
from adasim_ray.engine.ordering import INVALID_ID
from adasim_ray.engine.partners import windowed_support
from adasim_ray.engine.window import NeighbourWindow

CHUNK_ROWS = 16384


@dataclass
class StableNeighbours:
    """Eq. 11 support of every image, self left out.

    Attributes:
        ids: (N, K) int64 neighbour ids ranked by score, ``-1`` in empty slots.
        scores: (N, K) float32 Eq. 11 scores, 0 in empty slots.
    """

    ids: np.ndarray
    scores: np.ndarray


def stable_neighbours(windows: list[NeighbourWindow], k: int | None = None) -> StableNeighbours:
    """The Eq. 11 support of every image of the (sharded) window, without i itself.

    Args:
        windows: the window shards, together covering ids [0, N) in order.
        k: neighbours kept per image (default: the window's K).
    """
    ids_parts, score_parts = [], []
    for window in windows:
        for lo in range(0, window.size, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, window.size)
            self_ids = torch.arange(window.start + lo, window.start + hi, device="cpu")
            keep_k = k or window.topk
            # K + 1: i itself usually holds one slot of its own support.
            support, scores = windowed_support(
                *window.rows(lo, hi), self_ids, window.window, keep_k + 1
            )
            keep = (support != self_ids.unsqueeze(1)) & (support != INVALID_ID)
            # Move the kept entries to the front in their ranked order; drop the last column.
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
            support = support.gather(1, order)[:, :keep_k]
            scores = scores.gather(1, order)[:, :keep_k]
            empty = ~keep.gather(1, order)[:, :keep_k]
            ids_parts.append(support.masked_fill(empty, INVALID_ID).numpy())
            score_parts.append(scores.masked_fill(empty, 0.0).numpy())
    return StableNeighbours(np.concatenate(ids_parts), np.concatenate(score_parts))


def exact_window(
    feats: torch.Tensor, k: int, batch: int = 1024, device: str | torch.device = "cpu"
) -> NeighbourWindow:
    """A one-epoch window holding the exact top-(k + 1) neighbours (self included) of ``feats``.

    Unlike training, every row is written before any query, so the neighbours are symmetric
    and complete. The engine's cache does the search (chunked, exact tie order).

    Examples:
        >>> win = exact_window(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=1)
        >>> stable_neighbours([win], k=1).ids.tolist()
        [[1], [0], [1]]
    """
    n, d = feats.shape
    cache = SimilarityCache(0, n, d, dtype="float32", device=device)
    ids = torch.arange(n, device="cpu")  # the cache moves them to its device
    for lo in range(0, n, batch):
        cache.write(ids[lo : lo + batch], feats[lo : lo + batch])
    window = NeighbourWindow(0, n, window=1, topk=min(k + 1, n), sim_dtype="float32")
    for lo in range(0, n, batch):
        top = cache.query(feats[lo : lo + batch], ids[lo : lo + batch], window.topk)
        window.record(ids[lo : lo + batch], top.ids.cpu(), top.sims.cpu())
    window.end_epoch()
    return window


@dataclass
class LabelSuspects:
    """Images ranked by how strongly their stable neighbours agree on *another* label.

    Attributes:
        ids: (M,) image ids, most suspect first (only images with some neighbour weight).
        labels: (M,) their own labels.
        suggested: (M,) the label most of the other weight goes to.
        share: (M,) share of the neighbour weight voting for ``suggested`` (1 = all of it).
        agree: (M,) share voting for the image's own label.
        weight: (M,) total Eq. 11 weight of the neighbours.
    """

    ids: np.ndarray
    labels: np.ndarray
    suggested: np.ndarray
    share: np.ndarray
    agree: np.ndarray
    weight: np.ndarray


def label_suspects(neighbours: StableNeighbours, labels: np.ndarray) -> LabelSuspects:
    """Rank images by the weight share of the best *other* label among their stable neighbours.

    Examples:
        >>> nbrs = StableNeighbours(np.array([[1, 2], [0, 2], [1, 0]]),
        ...                         np.array([[0.9, 0.8], [0.9, 0.7], [0.9, 0.8]], np.float32))
        >>> label_suspects(nbrs, np.array([0, 0, 1])).ids.tolist()  # image 2 sits among 0s
        [2, 0, 1]
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(neighbours.ids)
    weight, share, agree = np.zeros(n), np.zeros(n), np.zeros(n)
    suggested = np.full(n, -1, dtype=np.int64)
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, n)
        ids = neighbours.ids[lo:hi]
        weights = np.clip(neighbours.scores[lo:hi], 0.0, None).astype(np.float64)
        valid = (ids != INVALID_ID) & (weights > 0)
        nbr_labels = np.where(valid, labels[np.clip(ids, 0, None)], -1)
        own = labels[lo:hi, None]
        total = (weights * valid).sum(axis=1)
        agree_w = (weights * (valid & (nbr_labels == own))).sum(axis=1)
        # Each slot's vote: the summed weight of all other-label slots with its label (K x K).
        other = valid & (nbr_labels != own)
        same_label = nbr_labels[:, :, None] == nbr_labels[:, None, :]
        votes = (same_label * (weights * other)[:, None, :]).sum(axis=2) * other
        best = votes.argmax(axis=1)
        rows = np.arange(hi - lo)
        best_w = votes[rows, best]
        safe = np.where(total > 0, total, 1.0)
        weight[lo:hi], share[lo:hi], agree[lo:hi] = total, best_w / safe, agree_w / safe
        suggested[lo:hi] = np.where(best_w > 0, nbr_labels[rows, best], -1)
    has = np.flatnonzero(weight > 0)
    order = has[np.lexsort((has, -weight[has], -share[has]))]
    return LabelSuspects(
        ids=order,
        labels=labels[order],
        suggested=suggested[order],
        share=share[order].astype(np.float32),
        agree=agree[order].astype(np.float32),
        weight=weight[order].astype(np.float32),
    )


@dataclass
class DuplicatePairs:
    """Pairs of distinct images (a < b), most similar cached features first.

    Attributes:
        a, b: (M,) image ids.
        cosine: (M,) cosine similarity of their cached features.
        score: (M,) mutual Eq. 11 score, (score_a(b) + score_b(a)) / 2.
    """

    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    score: np.ndarray


def duplicate_pairs(
    neighbours: StableNeighbours, rows: torch.Tensor, written: torch.Tensor | None = None
) -> DuplicatePairs:
    """Candidate pairs from the stable neighbours, ranked by the cosine of their cached rows.

    Args:
        neighbours: the Eq. 11 supports (:func:`stable_neighbours`).
        rows: (N, d) the cache Z (L2-normalised rows, any float dtype).
        written: (N,) bool, rows ever written; pairs with an unwritten row are left out.

    Examples:
        >>> nbrs = StableNeighbours(np.array([[1], [0], [0]]), np.ones((3, 1), np.float32))
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
        >>> pairs = duplicate_pairs(nbrs, z)
        >>> list(zip(pairs.a.tolist(), pairs.b.tolist()))
        [(0, 1), (0, 2)]
        >>> [round(float(c), 2) for c in pairs.cosine]
        [1.0, 0.6]
    """
    n, k = neighbours.ids.shape
    anchor = np.repeat(np.arange(n, dtype=np.int64), k)
    other = neighbours.ids.reshape(-1)
    score = neighbours.scores.reshape(-1)
    keep = (other != INVALID_ID) & (other != anchor)
    if written is not None:
        ok = np.asarray(written, dtype=bool)
        keep &= ok[anchor] & ok[np.clip(other, 0, None)]
    anchor, other, score = anchor[keep], other[keep], score[keep]
    a, b = np.minimum(anchor, other), np.maximum(anchor, other)
    # Mutual score: both directions summed per unordered pair (a missing direction counts 0).
    key = a * n + b
    uniq, inverse = np.unique(key, return_inverse=True)
    mutual = np.bincount(inverse, weights=score, minlength=len(uniq)) / 2
    a, b = uniq // n, uniq % n
    z = rows.float()
    cosine = np.empty(len(a), dtype=np.float32)
    for lo in range(0, len(a), 1 << 20):
        hi = min(lo + (1 << 20), len(a))
        za = z[torch.from_numpy(a[lo:hi])]
        zb = z[torch.from_numpy(b[lo:hi])]
        cosine[lo:hi] = torch.nn.functional.cosine_similarity(za, zb, dim=1).numpy()
    order = np.lexsort((b, a, -mutual, -cosine))
    return DuplicatePairs(a[order], b[order], cosine[order], mutual[order].astype(np.float32))
