"""One total order for neighbours, shared by the cache query, the shard merge and the plan.

Ties matter: merging the top-K of S shards must give exactly the top-K of the whole cache, and
"argmax == self" (Algorithm 1, line 13) must have one answer when two images score the same.
Every ranking in the engine therefore sorts by the same key:

    similarity (or score) descending, then the anchor image itself first, then smaller id first.

The key packs the three into one int64 so that a single ``topk`` gives a deterministic order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

INVALID_ID = -1
"""Id of an empty top-K slot (fewer than K candidates, or an image not seen that epoch)."""

_LOW31 = 0x7FFFFFFF
_SELF_RANK = 0xFFFFFFFF
MIN_KEY = torch.iinfo(torch.int64).min


def float_order_key(values: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int64 keys with the same order (``-0.0`` counts as ``0.0``).

    The IEEE-754 bit pattern of a non-negative float is ordered like the float; for negative
    floats flipping the 31 low bits restores the order.
    """
    values = values.to(torch.float32) + 0.0  # turns -0.0 into +0.0
    bits = values.view(torch.int32)
    flipped = torch.where(bits < 0, bits ^ _LOW31, bits)
    return flipped.to(torch.int64)


def rank_key(values: torch.Tensor, ids: torch.Tensor, self_ids: torch.Tensor) -> torch.Tensor:
    """The int64 ranking key of (value, id) candidates for anchors ``self_ids``.

    Args:
        values: (B, M) similarities or scores; ``-inf`` marks an empty candidate.
        ids: (B, M) global image ids; ``INVALID_ID`` marks an empty candidate.
        self_ids: (B,) the anchor image of each row.

    Returns:
        (B, M) int64 keys; a larger key ranks first, empty candidates get ``MIN_KEY``.
    """
    ids64 = ids.to(torch.int64)
    is_self = ids64 == self_ids.to(torch.int64).unsqueeze(1)
    tiebreak = torch.where(is_self, torch.full_like(ids64, _SELF_RANK), _LOW31 - ids64)
    key = (float_order_key(values) << 32) | tiebreak
    empty = (ids64 == INVALID_ID) | torch.isneginf(values)
    return key.masked_fill(empty, MIN_KEY)


def top_by_key(
    values: torch.Tensor, ids: torch.Tensor, self_ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` candidates of each row in the engine's order, padded with empty slots.

    Returns:
        (values (B, k) float32, ids (B, k) int64); empty slots hold ``-inf`` and ``INVALID_ID``.
    """
    key = rank_key(values, ids, self_ids)
    take = min(k, key.shape[1])
    top_key, pos = key.topk(take, dim=1, sorted=True)
    out_values = values.to(torch.float32).gather(1, pos)
    out_ids = ids.to(torch.int64).gather(1, pos)
    empty = top_key == MIN_KEY
    out_values = out_values.masked_fill(empty, float("-inf"))
    out_ids = out_ids.masked_fill(empty, INVALID_ID)
    if take < k:
        pad = k - take
        out_values = torch.cat(
            [out_values, out_values.new_full((len(out_values), pad), -torch.inf)], 1
        )
        out_ids = torch.cat([out_ids, out_ids.new_full((len(out_ids), pad), INVALID_ID)], 1)
    return out_values, out_ids


def exact_topk(
    values: torch.Tensor,
    self_ids: torch.Tensor,
    k: int,
    ids_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` of each row in the engine's order, at the cost of a float ``topk``.

    A float ``topk`` of k + 1 values settles the top-k *set* wherever the (k+1)-th value is
    below the k-th; the k are then put in the engine's order. Rows with a tie at the k-th place
    (rare outside exact duplicates) are redone with the full key over their tied candidates.

    Args:
        values: (B, M) float32 similarities or scores, ``-inf`` for empty candidates.
        self_ids: (B,) anchor ids.
        k: how many to keep.
        ids_at: ``ids_at(rows, pos)`` gives the global ids at positions ``pos`` (R, P) of the
            rows ``rows`` (R,); empty candidates may map to anything.

    Returns:
        (values (B, k) float32, ids (B, k) int64), empty slots ``-inf`` and ``INVALID_ID``.
    """
    rows = torch.arange(values.shape[0], device=values.device)
    take = min(k + 1, values.shape[1])
    top_vals, pos = values.topk(take, dim=1)
    if take <= k:  # every candidate is in: only the order is left to settle
        return top_by_key(top_vals, ids_at(rows, pos), self_ids, k)
    tied = (top_vals[:, k] == top_vals[:, k - 1]) & torch.isfinite(top_vals[:, k - 1])
    out_vals, out_ids = top_by_key(top_vals[:, :k], ids_at(rows, pos[:, :k]), self_ids, k)
    tied_rows = torch.nonzero(tied).flatten()
    # Tied rows are redone with the full key over all their candidates, a block of rows at a
    # time (fp16 similarities tie often: this path must stay vectorised).
    block = max(1, (1 << 22) // values.shape[1])
    for lo in range(0, len(tied_rows), block):
        sub = tied_rows[lo : lo + block]
        out_vals[sub], out_ids[sub] = redo_rows(values, sub, self_ids, k, ids_at)
    return out_vals, out_ids


def redo_rows(
    values: torch.Tensor,
    rows: torch.Tensor,
    self_ids: torch.Tensor,
    k: int,
    ids_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` of the rows ``rows`` of ``values`` by the full key over all their
    candidates: :func:`exact_topk`'s repair of rows tied at the k-th place."""
    all_pos = torch.arange(values.shape[1], device=values.device).expand(len(rows), -1)
    return top_by_key(values[rows], ids_at(rows, all_pos), self_ids[rows], k)
