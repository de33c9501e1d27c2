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
from adasim_ray.figures.grid import figure, save, show


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
    """The support and partner distribution of each query id; ``windows`` are consecutive
    shards (all of a run's cover ids [0, N), one shard actor's its own range); one Eq. 11
    computation per window shard for all of its queries."""
    wanted = torch.as_tensor(queries, dtype=torch.int64).reshape(-1)
    lo, hi = windows[0].start, windows[-1].stop
    outside = (wanted < lo) | (wanted >= hi)
    if outside.any():
        where = f"the run's {hi} images" if lo == 0 else f"images [{lo}, {hi})"
        raise ValueError(f"image {int(wanted[outside][0])} is outside {where}")
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
    lo, hi = windows[0].start, windows[-1].stop
    step = max(1, (hi - lo) // 20_000)  # at most ~20k candidates on large data sets
    candidates = supports(windows, list(range(lo, hi, step)), tau)
    return [s.query for s in spread_by_p_other(candidates, count)]


def spread_by_p_other(items: list[Support], count: int) -> list[Support]:
    """``count`` of ``items`` that bootstrap, evenly spaced in the order of p(other), most
    likely first; the first ``count`` items when none bootstraps.

    Examples:
        >>> items = [Support(q, [q], [1.0], [1.0 - q / 10], True) for q in range(5)]
        >>> [s.query for s in spread_by_p_other(items, 3)]  # p(other) 0 for every query
        [0, 2, 4]
    """
    ranked = sorted((s for s in items if s.bootstraps), key=lambda s: (-s.p_other, s.query))
    if not ranked:
        return list(items[:count])
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round())
    return [ranked[int(k)] for k in picks]


def draw_supports(items: list[Support], images: dict[int, np.ndarray],
                  labels: dict[int, int | None], output: str | Path, title: str) -> None:
    """One row per query: the query, then its support with a bar of each member's probability
    (the PNG of ``visualize neighbours``)."""
    cols = 1 + max((len(s.ids) for s in items), default=1)
    fig, axes = figure(len(items), cols, title, lines=2)
    for row, item in zip(axes, items, strict=False):
        label = labels.get(item.query)
        show(row[0], images[item.query],
              f"query {item.query}" + (f"\nlabel {label}" if label is not None else ""),
              color="navy")
        for ax, j, p in zip(row[1:], item.ids, item.probs, strict=False):
            same = labels.get(j) is not None and labels.get(j) == label
            colour = "black" if labels.get(j) is None else ("green" if same else "red")
            show(ax, images[j], f"{'self' if j == item.query else j}  p={p:.2f}", color=colour)
            bar = ax.inset_axes((0.0, -0.12, 1.0, 0.08))
            bar.barh([0], [p], color="tab:blue", height=1.0)
            bar.set_xlim(0, 1)
            bar.axis("off")
    save(fig, Path(output))


#: ``supports_grid``'s colours (RGB): the query's frame, a member of the same label, of
#: another label, of no label; the probability bars; the background.
GRID_COLOURS = {"query": (20, 40, 140), "same": (30, 160, 60), "other": (210, 40, 40),
                "unlabelled": (128, 128, 128), "bar": (40, 110, 200),
                "track": (225, 225, 225), "background": (255, 255, 255)}
GRID_LEGEND = ("Fig. 1, one row per query: the query (blue frame), then its support ranked by "
               "the Eq. 11 score, each framed green (same label as the query), red (another "
               "label) or grey (no label), over a bar whose length is its probability of being "
               "the query's partner at the next epoch (a full-width bar is 1).")


def supports_grid(items: list[Support], images: dict[int, np.ndarray],
                  labels: dict[int, int | None], tile: int = 64) -> np.ndarray:
    """Fig. 1 as an (H, W, 3) uint8 image drawn with numpy alone, in milliseconds (the Train
    loop's TensorBoard picture at each checkpoint): ``GRID_LEGEND`` says how to read it."""
    from PIL import Image

    frame, bar_h, gap = 3, 6, 4
    cell_w, cell_h = tile + 2 * frame, tile + 2 * frame + bar_h + 2
    cols = 1 + max((len(s.ids) for s in items), default=1)
    out = np.empty((gap + len(items) * (cell_h + gap), gap + cols * (cell_w + gap), 3), np.uint8)
    out[:] = GRID_COLOURS["background"]

    def put(row: int, col: int, index: int, colour: str, p: float | None) -> None:
        y, x = gap + row * (cell_h + gap), gap + col * (cell_w + gap)
        out[y: y + tile + 2 * frame, x: x + cell_w] = GRID_COLOURS[colour]
        image = np.asarray(images[index])
        if image.ndim == 2:
            image = image[:, :, None]
        image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        small = Image.fromarray(np.ascontiguousarray(image[:, :, :3])).resize(
            (tile, tile), Image.Resampling.BILINEAR)
        out[y + frame: y + frame + tile, x + frame: x + frame + tile] = np.asarray(small)
        if p is not None:
            top = y + tile + 2 * frame + 2
            out[top: top + bar_h, x: x + cell_w] = GRID_COLOURS["track"]  # the scale, 0 to 1
            out[top: top + bar_h, x: x + round(p * cell_w)] = GRID_COLOURS["bar"]

    for row, item in enumerate(items):
        label = labels.get(item.query)
        put(row, 0, item.query, "query", None)
        for col, (j, p) in enumerate(zip(item.ids, item.probs, strict=False), start=1):
            other = labels.get(j)
            colour = ("unlabelled" if other is None or label is None
                      else "same" if other == label else "other")
            put(row, col, j, colour, p)
    return out
