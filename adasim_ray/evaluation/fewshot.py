"""Few-shot transfer with a nearest-class-mean classifier (the paper's Sec. 4.6).

The AdaSim paper follows Ericsson et al. ("How well do self-supervised models transfer?",
CVPR 2021, ref. [20]) and evaluates frozen features with Prototypical Networks (Snell et
al., 2017, ref. [42]): 5-way 5-shot episodes with 15 query images per class, averaged over
600 randomly sampled episodes, reported as mean accuracy with a 95% confidence interval.

One episode:

1. draw ``ways`` classes, then ``shots + queries`` distinct images of each;
2. the prototype of class c is the mean of its L2-normalised support features,
   ``c_k = (1 / shots) * sum_i f(x_i)`` (ProtoNets, Eq. 1);
3. each query goes to the nearest prototype in squared Euclidean distance,
   ``argmin_k ||f(x) - c_k||^2`` (ProtoNets, Eq. 2, the distance Snell et al. recommend);
4. the episode's accuracy is the fraction of its ``ways * queries`` queries classified
   correctly.

The 95% interval is ``1.96 * std(episode accuracies) / sqrt(episodes)`` with the
population standard deviation, as in the evaluation code of refs. [20] and [42].
"""

from __future__ import annotations

import numpy as np
import torch


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        return np.asarray(x)
    x = x.detach().cpu()
    # numpy has no bfloat16 (features a run of many ranks gathered in that cache dtype).
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def confidence_interval95(accuracies: np.ndarray) -> float:
    """Half-width of the 95% interval of a mean: ``1.96 * std / sqrt(n)`` (population std)."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))


def eligible_classes(labels: np.ndarray, min_count: int) -> np.ndarray:
    """Sorted classes with at least ``min_count`` samples (the ones an episode can use)."""
    classes, counts = np.unique(labels, return_counts=True)
    return classes[counts >= min_count]


def nearest_prototype(support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Classify queries by the nearest class mean in squared Euclidean distance.

    Args:
        support: (ways, shots, d) support features, already L2-normalised.
        query: (m, d) query features.

    Returns:
        (m,) int64 index of the nearest prototype, ``argmin_k ||q - c_k||^2`` with
        ``c_k = mean(support[k])`` (ProtoNets, Eq. 1-2). The prototypes are *not*
        renormalised, so a class whose supports disagree (short mean) is only near
        queries close to that mean; cosine to the prototype would ignore its length.
    """
    prototypes = support.mean(axis=1)  # ProtoNets Eq. 1
    # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2; ||q||^2 is the same for every class.
    distances = (prototypes * prototypes).sum(1)[None, :] - 2.0 * query @ prototypes.T
    return distances.argmin(axis=1)


def few_shot(
    feats: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    ways: int = 5,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> tuple[float, float]:
    """Prototypical-network few-shot accuracy over random episodes (ProtoNets, Eq. 1-2).

    Args:
        feats: (N, d) frozen features (re-L2-normalised here).
        labels: (N,) integer labels.
        ways: Classes per episode (paper: 5).
        shots: Support images per class (paper: 5).
        queries: Query images per class (paper: 15).
        episodes: Number of episodes (paper: 600).
        seed: Seed of the ``numpy.random.Generator`` that samples episodes; the same seed
            gives the same episodes for the same labels.

    Returns:
        ``(mean, ci95)``: mean episode accuracy in [0, 1] and the half-width of its 95%
        confidence interval, ``1.96 * std / sqrt(episodes)``.

    Raises:
        ValueError: fewer than ``ways`` classes have ``shots + queries`` samples, or a
            bad argument.

    Examples:
        >>> mean, ci95 = few_shot(test_f, test_y)  # 5-way 5-shot, 15 queries, 600 episodes
        >>> print(f"{100 * mean:.2f} +- {100 * ci95:.2f}")
    """
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries),
                        ("episodes", episodes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    x = _as_numpy(feats).astype(np.float32, copy=False)
    y = _as_numpy(labels).astype(np.int64, copy=False)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            f"feats must be (N, d) and labels (N,), got {x.shape} and {y.shape}"
        )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)

    per_class = shots + queries
    classes = eligible_classes(y, per_class)
    if len(classes) < ways:
        raise ValueError(
            f"{ways}-way {shots}-shot few-shot needs {ways} classes with at least "
            f"{per_class} samples (shots + queries) each; only {len(classes)} of "
            f"{len(np.unique(y))} classes qualify"
        )
    members = [np.flatnonzero(y == c) for c in classes]

    rng = np.random.default_rng(seed)
    accuracies = np.empty(episodes, dtype=np.float64)
    truth = np.repeat(np.arange(ways), queries)
    for episode in range(episodes):
        chosen = rng.choice(len(classes), size=ways, replace=False)
        picks = np.stack(
            [rng.choice(members[c], size=per_class, replace=False) for c in chosen]
        )  # (ways, shots + queries)
        support = x[picks[:, :shots]]  # (ways, shots, d)
        query = x[picks[:, shots:]].reshape(ways * queries, -1)
        accuracies[episode] = np.mean(nearest_prototype(support, query) == truth)
    return float(accuracies.mean()), confidence_interval95(accuracies)
