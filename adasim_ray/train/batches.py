"""How a rank's share of an epoch splits into the fetch's batches: a module of its own, numpy
only, for the pipeline that builds the blocks (imported by processes that never fetch) and
the fetcher that makes each batch's views."""

from __future__ import annotations

import numpy as np


def fetch_batches(per_rank: int, batch_size: int) -> list[np.ndarray]:
    """A rank's positions ``0..P-1`` as the fetch's batches: ``ceil(P / batch_size)`` runs of
    consecutive positions, of near-equal sizes. Each batch's views come from one generator
    seeded by its first position, so this split fixes the views of a run."""
    return np.array_split(np.arange(per_rank, dtype=np.int64),
                          max(1, -(-per_rank // batch_size)))
