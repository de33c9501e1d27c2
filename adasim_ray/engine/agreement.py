"""Whether two engines fed the same batches agree: a GPU's neighbours against the CPU's.

Both devices round the features the same way and compute float32 similarities of the same
rounded values (``cache.similarities``), so they differ only in summation order, by a few
1e-7. Two candidates whose similarities lie closer than that may swap places, or trade the
K-th place; everywhere else the top-K ids must be equal. Such a swap then shows in the
window rows of that image, and in its partner for the epochs the window remembers it.

:func:`compare_topk` sorts the rows of one batch into equal, near-tied (they differ only
where two candidates lie within ``tol`` of each other) and different rows;
:class:`EngineAgreement` follows two :class:`~adasim_ray.engine.Bootstrapper` s through whole
epochs: top-K, windows and plans, each difference counted as excused (by a near tie, or by a
window similarity rounded to the other side of a float16 step) or not.

Examples:
    >>> a = TopK(torch.tensor([[0.9, 0.5000001]]), torch.tensor([[3, 7]]))
    >>> b = TopK(torch.tensor([[0.9, 0.5000002]]), torch.tensor([[3, 8]]))
    >>> compare_topk(a, b, tol=1e-6).counts.near_tied
    1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from adasim_ray.engine.cache import TopK
from adasim_ray.engine.shard import Bootstrapper

#: Similarities closer than this may be ordered differently by two devices (summation order).
NEAR_TIE = 1e-6


@dataclass
class RowCounts:
    """Rows of two engines' answers, by how they agree.

    Attributes:
        equal: identical rows.
        near_tied: rows that differ only where two candidates lie within the tolerance.
        rounded: rows with the same ids whose stored (float16) similarities differ by one
            rounding step (windows only: float32 values a few 1e-7 apart on either side of a
            float16 step).
        differ: rows that differ otherwise: a real disagreement.
    """

    equal: int = 0
    near_tied: int = 0
    rounded: int = 0
    differ: int = 0

    def __add__(self, other: RowCounts) -> RowCounts:
        return RowCounts(*(a + b for a, b in zip(asdict(self).values(),
                                                  asdict(other).values(), strict=True)))


def _misplaced_ok(ids_a: list[int], sims_a: list[float], ids_b: list[int],
                  sims_b: list[float], tol: float) -> bool:
    """Whether every candidate that ``b`` holds at another place than ``a`` got there by a
    near tie: it left a place in ``a`` whose similarity lies within ``tol`` of the place it
    took, or it came from beyond ``a``'s K and ``a``'s candidate at that place lies within
    ``tol`` of it."""
    where_a = {c: j for j, c in enumerate(ids_a)}
    for k, c in enumerate(ids_b):
        if c == ids_a[k]:
            continue
        if c < 0:  # an empty slot where the other engine has a candidate
            return False
        j = where_a.get(c)
        gap = abs(sims_a[j] - sims_a[k]) if j is not None else sims_a[k] - sims_b[k]
        if not gap <= tol:  # also False for a NaN gap
            return False
    return True


@dataclass
class TopKComparison:
    """:func:`compare_topk`'s answer.

    Attributes:
        counts: the rows by kind (``rounded`` stays 0 here).
        near_tied: (B,) bool, rows that differ only by near ties.
        differ: (B,) bool, rows that differ otherwise.
        max_sim_diff: the largest |similarity difference| of one candidate found at the same
            place in both answers: the summation-order error of the two devices.
    """

    counts: RowCounts
    near_tied: torch.Tensor
    differ: torch.Tensor
    max_sim_diff: float


def compare_topk(ref: TopK, other: TopK, tol: float = NEAR_TIE) -> TopKComparison:
    """How the top-K rows of two engines for the same anchors agree.

    Args:
        ref: (B, K) answer of the reference (the CPU).
        other: (B, K) answer of the engine under test (a GPU); moved to the CPU here.
        tol: candidates closer than this may be ordered either way.
    """
    ref_ids, ref_sims = ref.ids.cpu(), ref.sims.cpu().float()
    ids, sims = other.ids.cpu(), other.sims.cpu().float()
    if ref_ids.shape != ids.shape:
        raise ValueError(f"top-K shapes differ: {tuple(ref_ids.shape)} vs {tuple(ids.shape)}")
    same_place = (ref_ids == ids) & torch.isfinite(ref_sims) & torch.isfinite(sims)
    max_diff = float((ref_sims - sims).abs()[same_place].max()) if same_place.any() else 0.0
    differs = (ref_ids != ids).any(dim=1)
    near_tied = torch.zeros_like(differs)
    for r in torch.nonzero(differs).flatten().tolist():
        a_ids, a_sims = ref_ids[r].tolist(), ref_sims[r].tolist()
        b_ids, b_sims = ids[r].tolist(), sims[r].tolist()
        near_tied[r] = (_misplaced_ok(a_ids, a_sims, b_ids, b_sims, tol)
                        and _misplaced_ok(b_ids, b_sims, a_ids, a_sims, tol))
    differ = differs & ~near_tied
    counts = RowCounts(equal=int((~differs).sum()), near_tied=int(near_tied.sum()),
                       differ=int(differ.sum()))
    return TopKComparison(counts, near_tied, differ, max_diff)


class EngineAgreement:
    """Two engines fed the same batches, compared step by step and epoch by epoch.

    Call :meth:`step` with each batch's two answers, :meth:`epoch` after both engines closed
    an epoch, and :meth:`summary` at the end. A window row (an image's w x K neighbours) may
    differ only for an image whose top-K was near-tied in some step, or by one float16
    rounding step of a stored similarity; a partner only for an image whose window row
    differs. Everything else counts as ``differ``.

    Args:
        num_images: N of both engines.
        tol: near-tie tolerance of the similarities (:data:`NEAR_TIE`).
    """

    def __init__(self, num_images: int, tol: float = NEAR_TIE) -> None:
        self.tol = tol
        self.topk = RowCounts()
        self.window = RowCounts()
        self.plan = RowCounts()
        self.max_sim_diff = 0.0
        self.tied_images = torch.zeros(num_images, dtype=torch.bool, device="cpu")  # on host

    def step(self, ids: torch.Tensor, ref: TopK, other: TopK) -> RowCounts:
        """Compare one batch's answers; remember the images whose rows are near-tied."""
        found = compare_topk(ref, other, self.tol)
        self.topk = self.topk + found.counts
        self.max_sim_diff = max(self.max_sim_diff, found.max_sim_diff)
        self.tied_images[ids.cpu()[found.near_tied]] = True
        return found.counts

    def epoch(self, ref: Bootstrapper, other: Bootstrapper) -> None:
        """Compare the windows and the partner plans of two engines after ``end_epoch``."""
        ref_ids, ref_sims = _window(ref)
        ids, sims = _window(other)
        ids_equal = (ref_ids == ids).flatten(1).all(dim=1)
        exact = ids_equal & (ref_sims == sims).flatten(1).all(dim=1)
        # one rounding step of the stored dtype at that magnitude: eps * |x| >= the spacing
        step = torch.finfo(sims.dtype).eps * ref_sims.float().abs()
        close = ((ref_sims.float() - sims.float()).abs() <= step + self.tol).flatten(1).all(1)
        rounded = ids_equal & close & ~exact
        near_tied = ~ids_equal & self.tied_images
        self.window = self.window + RowCounts(
            equal=int(exact.sum()), near_tied=int(near_tied.sum()),
            rounded=int(rounded.sum()), differ=int((~(exact | rounded | near_tied)).sum()))
        plan_differs = ref.partner_plan() != other.partner_plan().cpu()
        excused = plan_differs & ~exact
        self.plan = self.plan + RowCounts(
            equal=int((~plan_differs).sum()), near_tied=int((excused & ~rounded).sum()),
            rounded=int((excused & rounded).sum()), differ=int((plan_differs & exact).sum()))

    @property
    def ok(self) -> bool:
        """No difference that a near tie or a rounding step does not explain."""
        return self.topk.differ == 0 and self.window.differ == 0 and self.plan.differ == 0

    def summary(self, prefix: str = "engine_") -> dict[str, int | float | bool]:
        """Flat figures for a JSON line: ``<prefix>ids_equal``, ``..window_equal``,
        ``..plan_equal`` (true when nothing but near ties and rounding steps differ), the rows
        of each kind (``<prefix>topk_near_tied_rows`` etc.) and the largest similarity
        difference of one candidate between the two engines."""
        out: dict[str, int | float | bool] = {
            f"{prefix}ids_equal": self.topk.differ == 0,
            f"{prefix}window_equal": self.window.differ == 0,
            f"{prefix}plan_equal": self.plan.differ == 0,
            f"{prefix}max_sim_diff": self.max_sim_diff,
        }
        for part, counts in (("topk", self.topk), ("window", self.window),
                             ("plan", self.plan)):
            for kind, n in asdict(counts).items():
                if part == "topk" and kind == "rounded":
                    continue
                out[f"{prefix}{part}_{kind}_rows"] = n
        return out


def _window(engine: Bootstrapper) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, w, K) window ids and similarities of all shards of ``engine``, on the CPU."""
    return (torch.cat([s.window.ids for s in engine.shards]).cpu(),
            torch.cat([s.window.sims for s in engine.shards]).cpu())
