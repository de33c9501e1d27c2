"""The paper's evaluation suite on one train/test split, as one JSON-ready dict.

Runs the three protocols of the AdaSim paper on frozen features:

- k-NN (Sec. 4.5, DINO's protocol: k = 20, T = 0.07, cosine): ``knn.knn_classify``;
- linear probe (Sec. 4.5), trained on the train split, top-1 on the test split:
  ``linear.linear_probe``;
- few-shot transfer (Sec. 4.6, 5-way 5-shot, 15 queries, 600 episodes, ProtoNets) on the
  *test* split's features, so no image seen by the k-NN / linear training side is used:
  ``fewshot.few_shot``.

``evaluate`` takes features; ``evaluate_backbone`` extracts them from a frozen backbone
first; ``evaluate_raw_pixels`` is the no-learning baseline (``--raw-pixels``). Comparing a
pretrained checkpoint with these baselines (and with the same backbone at random init)
shows what pretraining bought.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from adasim_ray.evaluation.features import (
    FeatureSource,
    ProgressFn,
    Transform,
    extract_features,
    raw_pixel_features,
)
from adasim_ray.evaluation.fewshot import few_shot
from adasim_ray.evaluation.knn import knn_classify
from adasim_ray.evaluation.linear import linear_probe
from adasim_ray.evaluation.progress import Progress

ArrayLike = np.ndarray | torch.Tensor


def _labels_array(labels: ArrayLike | None, split: str) -> np.ndarray:
    if labels is None:
        raise ValueError(
            f"the {split} split has no labels; k-NN, linear and few-shot evaluation need them"
        )
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    return np.asarray(labels, dtype=np.int64)


def evaluate(
    train_feats: ArrayLike,
    train_labels: ArrayLike | None,
    test_feats: ArrayLike,
    test_labels: ArrayLike | None,
    *,
    linear: bool = True,
    fewshot: bool = True,
    seed: int = 0,
    k: int = 20,
    T: float = 0.07,
    device: torch.device | str | None = None,
    progress_prefix: str | None = None,
) -> dict[str, Any]:
    """k-NN, linear probe and few-shot accuracy of frozen features.

    Args:
        train_feats, train_labels: Features (n_train, d) and labels of the train split.
        test_feats, test_labels: Features (n_test, d) and labels of the test split.
        linear: Train and report the linear probe.
        fewshot: Run the 600 few-shot episodes on the test split.
        seed: Seed of the few-shot episodes and of a mini-batch linear probe.
        k, T: k-NN neighbours and temperature (DINO: 20, 0.07).
        device: Where k-NN and the linear probe run (default CPU for numpy input).
        progress_prefix: Print progress lines of long work (the k-NN votes) with this
            prefix (``[eval]``); None prints nothing.

    Returns:
        A dict with ``knn_top1``, ``knn_top5`` (None below 5 classes), ``linear_top1``
        (None if not asked), ``fewshot_mean`` and ``fewshot_ci95`` (None if not asked or
        fewer than 5 test classes have 20 images; ``fewshot_skipped`` then says why),
        ``n_train``, ``n_test``, ``num_classes``, ``feature_dim``, ``knn_k`` (k after
        clipping to n_train) and ``seconds`` (wall time per protocol). Accuracies are
        fractions in [0, 1].

    Examples:
        >>> result = evaluate(train_f, train_y, test_f, test_y, seed=0)
        >>> print(json.dumps(result))
    """
    y_train = _labels_array(train_labels, "train")
    y_test = _labels_array(test_labels, "test")
    num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {
        "n_train": len(y_train),
        "n_test": len(y_test),
        "num_classes": num_classes,
        "feature_dim": int(train_feats.shape[1]),
        "knn_k": min(k, len(y_train)),
    }

    start = time.perf_counter()
    result["knn_top1"], result["knn_top5"] = knn_classify(
        train_feats, y_train, test_feats, y_test, k=k, T=T, num_classes=num_classes,
        device=device,
        progress=None if progress_prefix is None else Progress(
            "k-NN votes", unit="queries", prefix=progress_prefix),
    )
    seconds["knn"] = time.perf_counter() - start

    result["linear_top1"] = None
    if linear:
        start = time.perf_counter()
        result["linear_top1"] = linear_probe(
            train_feats, y_train, test_feats, y_test, num_classes=num_classes, seed=seed,
            device=device,
        )
        seconds["linear"] = time.perf_counter() - start

    result["fewshot_mean"] = result["fewshot_ci95"] = None
    result["fewshot_skipped"] = None if fewshot else "not requested"
    if fewshot:
        start = time.perf_counter()
        try:
            result["fewshot_mean"], result["fewshot_ci95"] = few_shot(
                test_feats, y_test, seed=seed
            )
        except ValueError as error:
            # A data set with fewer than 5 classes has no 5-way episode: report why
            # instead of failing the k-NN and linear results that were computed.
            result["fewshot_skipped"] = str(error)
        seconds["fewshot"] = time.perf_counter() - start
    result["seconds"] = {name: round(value, 3) for name, value in seconds.items()}
    return result


def evaluate_backbone(
    backbone: nn.Module,
    train_source: FeatureSource,
    test_source: FeatureSource,
    transform: Transform | None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    progress_prefix: str | None = None,
    **protocol: Any,
) -> dict[str, Any]:
    """Extract frozen features of both splits with ``backbone`` and run ``evaluate``.

    Args:
        backbone: The frozen feature extractor (DINO: ``model.eval_backbone()``).
        train_source, test_source: Splits following the ``ImageSource`` contract.
        transform: Evaluation transform (e.g. ``GlobalViews.eval_transform``).
        batch_size: Images per forward pass.
        device: Where the backbone, k-NN and the linear probe run.
        progress: Optional ``progress(done, total)`` per extraction chunk.
        progress_prefix: Print progress lines of long work (features, k-NN) with this
            prefix; None prints nothing (unless ``progress`` is given).
        **protocol: Passed to ``evaluate`` (``linear``, ``fewshot``, ``seed``, ``k``, ``T``).
    """
    def lines(split: str) -> ProgressFn | None:
        if progress is not None or progress_prefix is None:
            return progress
        return Progress(f"features ({split} split)", prefix=progress_prefix)

    train_feats, train_labels = extract_features(
        backbone, train_source, transform, batch_size, device, progress=lines("train")
    )
    test_feats, test_labels = extract_features(
        backbone, test_source, transform, batch_size, device, progress=lines("test")
    )
    return evaluate(train_feats, train_labels, test_feats, test_labels, device=device,
                    progress_prefix=progress_prefix, **protocol)


def evaluate_raw_pixels(
    train_source: FeatureSource,
    test_source: FeatureSource,
    *,
    size: int | None = None,
    **protocol: Any,
) -> dict[str, Any]:
    """The raw-pixel baseline: ``evaluate`` on flattened, L2-normalised pixels.

    Args:
        train_source, test_source: Splits following the ``ImageSource`` contract.
        size: Resize images to ``size`` x ``size`` first (needed for variable-size data).
        **protocol: Passed to ``evaluate``.
    """
    train_feats, train_labels = raw_pixel_features(train_source, size=size)
    test_feats, test_labels = raw_pixel_features(test_source, size=size)
    return evaluate(train_feats, train_labels, test_feats, test_labels, **protocol)
