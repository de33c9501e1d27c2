"""The supervised oracle of Section 4.4 (Table 1): same-class partners from the labels.

The paper approximates the oracle N+ of positive pairs with ImageNet's labels: the partner of
image i is a random image of the same class (both views still augmented). Since that converges
much more slowly than standard pairs, a standard pair (j* = i) is used with a probability that
follows a linear schedule from 1 at the start of training to ``p`` at the end; Table 1 reports
p = 0 and p = 0.5 (0.5 is better, the paper's issue 1: standard pairs are still needed).

Here the schedule is indexed by epoch, like the plans of the other modes (one plan per epoch,
known before the epoch starts): ``standard_pair_probability(e) = linspace(1, p, E)[e]``.
A same-class partner is never i itself (a one-image class has no other member: j* = i), so the
bootstrapping ratio of an epoch is close to ``1 - standard_pair_probability(e)``.

All random numbers are drawn per fixed global block of image ids from generators seeded by
(seed, epoch, block), so the plan of an image does not depend on how the ids are sharded.
"""

from __future__ import annotations

import numpy as np
import torch

ORACLE_BLOCK_ROWS = 65536
_ORACLE_STREAM = 0x0AC1E  # keeps the oracle's generators apart from the Gumbel noise's


def standard_pair_probability(epoch: int, epochs: int, p: float) -> float:
    """Probability of a standard pair (j* = i) in ``epoch`` (0-based) of ``epochs``.

    Linear from 1 at the first epoch to ``p`` at the last (``numpy.linspace(1, p, epochs)``);
    epochs past the end keep ``p``.

    Examples:
        >>> [standard_pair_probability(e, 3, 0.5) for e in range(3)]
        [1.0, 0.75, 0.5]
    """
    if epochs <= 1:
        return 1.0 if epoch <= 0 else float(p)
    t = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return float((1.0 - t) + t * p)  # exactly 1 and p at the ends


class ClassMembers:
    """The images of every class, for drawing a random same-class partner.

    Args:
        labels: (N,) int64 class ids; negative = unknown (such an image always gets j* = i).

    Examples:
        >>> members = ClassMembers(torch.tensor([0, 1, 0, 1, 1]))
        >>> members.class_size(torch.tensor([0, 1])).tolist()
        [2, 3]
    """

    def __init__(self, labels: torch.Tensor | np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1:
            raise ValueError(f"labels must be a 1-d array, got shape {labels.shape}")
        self.labels = labels
        known = labels >= 0
        order = np.argsort(np.where(known, labels, np.iinfo(np.int64).max), kind="stable")
        self.order = order[: int(known.sum())]  # known images grouped by class, ids ascending
        sorted_labels = labels[self.order]
        classes, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
        # Per image: first position of its class in ``order``, the class size, its own rank.
        self._start = np.zeros(labels.size, dtype=np.int64)
        self._count = np.ones(labels.size, dtype=np.int64)
        self._rank = np.zeros(labels.size, dtype=np.int64)
        pos = np.searchsorted(classes, sorted_labels)
        self._start[self.order] = starts[pos]
        self._count[self.order] = counts[pos]
        self._rank[self.order] = np.arange(self.order.size) - starts[pos]

    def class_size(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Size of the class of each image (1 for images of unknown label)."""
        return torch.from_numpy(self._count[np.asarray(ids, dtype=np.int64)])

    def other_member(self, ids: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A same-class image other than i, picked by ``uniform`` in [0, 1) (i if none)."""
        count, rank = self._count[ids], self._rank[ids]
        others = count - 1
        k = np.minimum((uniform * others).astype(np.int64), np.maximum(others - 1, 0))
        k = k + (k >= rank)  # skip i's own position in its class
        picked = self.order[np.minimum(self._start[ids] + k, max(self.order.size - 1, 0))]
        return np.where(others > 0, picked, ids)


def _uniforms(seed: int, epoch: int, start: int, stop: int) -> np.ndarray:
    """(stop - start, 2) uniforms in [0, 1) for images [start, stop): coin, then pick."""
    parts = []
    for block in range(start // ORACLE_BLOCK_ROWS, (stop - 1) // ORACLE_BLOCK_ROWS + 1):
        rng = np.random.default_rng([seed, epoch, block, _ORACLE_STREAM])
        draws = rng.random((ORACLE_BLOCK_ROWS, 2))
        lo = max(start, block * ORACLE_BLOCK_ROWS) - block * ORACLE_BLOCK_ROWS
        hi = min(stop, (block + 1) * ORACLE_BLOCK_ROWS) - block * ORACLE_BLOCK_ROWS
        parts.append(draws[lo:hi])
    return np.concatenate(parts)


def oracle_partners(
    members: ClassMembers,
    start: int,
    stop: int,
    epoch: int,
    epochs: int,
    p: float,
    seed: int,
) -> torch.Tensor:
    """Partners j* of images [start, stop) in ``epoch`` under the supervised oracle.

    With probability ``standard_pair_probability(epoch, epochs, p)`` j* = i, else a uniformly
    drawn other image of i's class. Deterministic per (seed, epoch), whatever the sharding.

    Returns:
        (stop - start,) int64 global ids.

    Examples:
        >>> members = ClassMembers(torch.tensor([0, 0, 1, 1]))
        >>> oracle_partners(members, 0, 4, epoch=1, epochs=2, p=0.0, seed=0).tolist()
        [1, 0, 3, 2]
    """
    if not 0 <= start < stop <= members.labels.size:
        raise ValueError(f"range [{start}, {stop}) must lie inside [0, {members.labels.size})")
    ids = np.arange(start, stop, dtype=np.int64)
    draws = _uniforms(seed, epoch, start, stop)
    standard = draws[:, 0] < standard_pair_probability(epoch, epochs, p)
    chosen = np.where(standard, ids, members.other_member(ids, draws[:, 1]))
    return torch.from_numpy(chosen)
