"""Confident learning on out-of-sample class probabilities: which given labels are likely wrong.

A score built from neighbour votes (:func:`adasim_ray.audit.scores.label_suspects`) gives a
flipped label ("a 7 labelled 2") and an honest confusion ("a 4 that looks like a 9") the same
0/K votes when the features confuse many images, so planted errors drown in natural
confusions. Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021) separates them with calibrated probabilities:

1. **Out-of-sample probabilities.** The linear probe of the evaluation
   (:func:`adasim_ray.evaluation.linear.fit_linear_probe`: multinomial logistic regression by
   L-BFGS) is fitted on the frozen features in K stratified folds, so that p_hat(y | x_i)
   comes from a model that never saw image i's label.
2. **Per-class thresholds** (Eq. 2 of the paper): t_j = mean of p_hat(y = j | x_i) over the
   images labelled j. The confident joint counts image i in (given y~, true y*) when
   p_hat(y* | x_i) >= t_{y*}; off-diagonal counts estimate how many labels of each class are
   wrong, and that many images per class, least confident in their given label first, are
   flagged ("prune by noise rate", Sec. 3.2). ``cleanlab`` does both steps.
3. **Rank**: flagged images first, each by its *self-confidence* p_hat(y~_i | x_i) (Sec. 3.1:
   the label quality), lowest first; then the rest by the same score. A flip to an unrelated
   class has a near-zero probability for its given label, a natural confusion a moderate one.

``cleanlab`` is an optional extra (``pip install 'adasim-ray[audit]'``); without it the audit
ranks by neighbour votes and says so.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import torch

from adasim_ray.evaluation.linear import fit_linear_probe

FOLDS = 5
METHOD = "confident_learning"
#: The install hint when cleanlab is missing.
EXTRA = "pip install 'adasim-ray[audit]'"


def cleanlab_available() -> bool:
    """Whether ``cleanlab`` can be imported (the ``audit`` extra)."""
    return importlib.util.find_spec("cleanlab") is not None


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of every image: each class is shuffled and dealt round-robin to the folds.

    Examples:
        >>> f = stratified_folds(np.repeat([0, 1], 10), folds=5)
        >>> np.bincount(f).tolist(), np.bincount(f[:10]).tolist()
        ([4, 4, 4, 4, 4], [2, 2, 2, 2, 2])
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        ids = rng.permutation(np.flatnonzero(labels == c))
        # Each class starts where the last one stopped: the folds stay within one image in size.
        fold[ids] = (offset + np.arange(len(ids))) % folds
        offset += len(ids)
    return fold


def out_of_sample_probabilities(
    feats: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    folds: int = FOLDS,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(N, C) class probabilities of every image by a linear probe fitted on the other folds.

    Args:
        feats: (N, d) frozen features.
        labels: (N,) given labels >= 0.
        folds: K of the cross-fitting (>= 2); each probe sees (K - 1) / K of the labels.
        num_classes: C; default ``max(labels) + 1``.
        seed: the fold assignment's seed (the L-BFGS probe itself is deterministic).
        device: where the probes train (default: that of ``feats``, else the CPU).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if not 2 <= folds <= n:
        raise ValueError(f"folds must lie in [2, {n}] (the number of images), got {folds}")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    x = torch.as_tensor(feats, dtype=torch.float32, device="cpu")
    if device is not None:
        x = x.to(device)
    fold = stratified_folds(labels, folds, seed)
    probs = np.zeros((n, num_classes), dtype=np.float64)
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        fit = np.flatnonzero(fold != f)
        probe = fit_linear_probe(x[fit], labels[fit], num_classes=num_classes, method="lbfgs")
        with torch.inference_mode():
            p = torch.softmax(probe(x[held]).double(), dim=1)
        probs[held] = p.cpu().numpy()
    return probs


@dataclass
class LabelIssues:
    """Labelled images ranked by confident learning, most likely wrong first.

    Attributes:
        ids: (M,) positions in the ranked set, flagged issues first, each group by ``quality``.
        labels: (M,) their given labels.
        suggested: (M,) the most probable label (out of sample).
        quality: (M,) self-confidence p_hat(given label | x), in [0, 1].
        issue: (M,) bool, flagged by confident learning (prune by noise rate).
    """

    ids: np.ndarray
    labels: np.ndarray
    suggested: np.ndarray
    quality: np.ndarray
    issue: np.ndarray


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> LabelIssues:
    """Rank images by confident learning (``cleanlab``) on out-of-sample ``probs``.

    Examples:
        >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.1, 0.9], [0.97, 0.03]])
        >>> confident_learning(probs, np.array([0, 0, 1, 1, 1])).ids[0].item()  # a 0 labelled 1
        4
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    # n_jobs=1: in this process. cleanlab's pool forks it, and a fork of a process that runs
    # Ray's threads hung (a forked worker never exited, the pool was never joined: seen in
    # the test suite); its results do not depend on n_jobs.
    issue = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    order = np.lexsort((np.arange(len(labels)), quality, ~issue))
    return LabelIssues(
        ids=order,
        labels=labels[order],
        suggested=probs.argmax(axis=1)[order],
        quality=quality[order].astype(np.float32),
        issue=issue[order],
    )
