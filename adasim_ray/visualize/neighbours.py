"""Fig. 1: query images with their support S_union and the probability that each member is
drawn as the query's partner at the next epoch, from a run's latest checkpoint.

The probabilities are Algorithm 1's: the Eq. 11 scores over the window (``windowed_support``)
and, where the query itself ranks first, softmax(score / tau) over the support (the query
included); where it does not, the query keeps a standard pair (probability 1 on itself). The
planned partners of the next epoch are draws of exactly this distribution (Gumbel-max).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adasim_ray.engine.ordering import INVALID_ID
from adasim_ray.engine.partners import windowed_support
from adasim_ray.engine.window import NeighbourWindow


@dataclass
class Support:
    """One query's support: ids (ranked), Eq. 11 scores and sampling probabilities."""

    query: int
    ids: list[int]
    scores: list[float]
    probs: list[float]
    bootstraps: bool  # the query ranks first: its partner is sampled from the support

    @property
    def p_other(self) -> float:
        """Probability that the partner is another image than the query."""
        return float(sum(p for i, p in zip(self.ids, self.probs, strict=True) if i != self.query))


def supports(windows: list[NeighbourWindow], queries: list[int], tau: float) -> list[Support]:
    """The support and partner distribution of each query id (windows cover ids [0, N)); one
    Eq. 11 computation per window shard for all of its queries."""
    wanted = torch.as_tensor(queries, dtype=torch.int64).reshape(-1)
    outside = (wanted < 0) | (wanted >= windows[-1].stop)
    if outside.any():
        raise ValueError(f"image {int(wanted[outside][0])} is outside the run's "
                         f"{windows[-1].stop} images")
    out: list[Support | None] = [None] * len(wanted)
    for window in windows:
        at = torch.nonzero((wanted >= window.start) & (wanted < window.stop)).flatten()
        if not len(at):
            continue
        self_ids = wanted[at]
        support, scores = windowed_support(*window.rows_at(self_ids - window.start), self_ids,
                                           window.window, window.topk)
        for pos, query, row, row_scores in zip(at.tolist(), self_ids.tolist(), support, scores,
                                               strict=True):
            valid = row != INVALID_ID
            sup, sc = row[valid], row_scores[valid]
            bootstraps = bool(len(sup) and int(sup[0]) == query) and tau > 0
            probs = torch.softmax(sc / tau, dim=0) if bootstraps else (sup == query).float()
            out[pos] = Support(query, sup.tolist(), sc.tolist(), probs.tolist(), bootstraps)
    return out  # type: ignore[return-value]


def pick_queries(windows: list[NeighbourWindow], tau: float, count: int) -> list[int]:
    """``count`` queries that bootstrap, spread over the range of p(other) (from the most
    likely to be paired with another image to the least); the first ids when none does."""
    n = windows[-1].stop
    step = max(1, n // 20_000)  # at most ~20k candidates on large data sets
    candidates = supports(windows, list(range(0, n, step)), tau)
    ranked = sorted((s for s in candidates if s.bootstraps), key=lambda s: (-s.p_other, s.query))
    if not ranked:
        return [s.query for s in candidates[:count]]
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round())
    return [ranked[int(k)].query for k in picks]


def draw_supports(items: list[Support], images: dict[int, np.ndarray],
                  labels: dict[int, int | None], output: str | Path, title: str) -> None:
    """One row per query: the query, then its support with a bar of each member's probability."""
    from adasim_ray.audit.report import _figure, _save, _show

    cols = 1 + max((len(s.ids) for s in items), default=1)
    fig, axes = _figure(len(items), cols, title, lines=2)
    for row, item in zip(axes, items, strict=False):
        label = labels.get(item.query)
        _show(row[0], images[item.query],
              f"query {item.query}" + (f"\nlabel {label}" if label is not None else ""),
              color="navy")
        for ax, j, p in zip(row[1:], item.ids, item.probs, strict=False):
            same = labels.get(j) is not None and labels.get(j) == label
            colour = "black" if labels.get(j) is None else ("green" if same else "red")
            _show(ax, images[j], f"{'self' if j == item.query else j}  p={p:.2f}", color=colour)
            bar = ax.inset_axes((0.0, -0.12, 1.0, 0.08))
            bar.barh([0], [p], color="tab:blue", height=1.0)
            bar.set_xlim(0, 1)
            bar.axis("off")
    _save(fig, Path(output))
