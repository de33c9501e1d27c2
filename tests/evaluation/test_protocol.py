"""The whole suite on one split: keys, edge cases and a digits sanity check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from adasim_ray.evaluation.protocol import evaluate, evaluate_backbone, evaluate_raw_pixels

KEYS = {"knn_top1", "knn_top5", "linear_top1", "fewshot_mean", "fewshot_ci95", "n_train",
        "n_test", "num_classes"}


def test_raw_pixel_digits_sanity(digits_split):
    """sklearn digits raw pixels: k-NN ~0.98, a linear probe ~0.96, 5-way 5-shot ~0.95."""
    train, test = digits_split
    result = evaluate_raw_pixels(train, test, seed=0)
    assert result.keys() >= KEYS
    assert result["n_train"] == 1198 and result["n_test"] == 599
    assert result["num_classes"] == 10
    assert result["knn_top1"] > 0.9
    assert result["knn_top5"] >= result["knn_top1"]
    assert result["linear_top1"] > 0.9
    assert result["fewshot_mean"] > 0.85
    assert 0 < result["fewshot_ci95"] < 0.02
    assert result["fewshot_skipped"] is None
    json.dumps(result)  # the CLI prints it as one JSON line


def test_shuffled_labels_give_chance(digits_split):
    """Labels that carry no information must give chance-level results (the suite can fail)."""
    train, test = digits_split
    rng = np.random.default_rng(0)
    shuffled_train = type(train)(train.images, rng.permutation(train.labels))
    result = evaluate_raw_pixels(shuffled_train, test, fewshot=False, seed=0)
    assert result["knn_top1"] < 0.25
    assert result["linear_top1"] < 0.25


def test_few_classes_and_tiny_test_split():
    rng = np.random.default_rng(1)
    train_y = rng.integers(0, 3, 50)
    train_x = np.eye(3, 8)[train_y] + 0.05 * rng.standard_normal((50, 8))
    test_y = np.array([2, 0])
    test_x = np.eye(3, 8)[test_y]
    result = evaluate(train_x, train_y, test_x, test_y, seed=0)
    assert result["knn_top1"] == 1.0
    assert result["knn_top5"] is None  # fewer than 5 classes
    assert result["linear_top1"] == 1.0
    assert result["fewshot_mean"] is None and result["fewshot_ci95"] is None
    assert "needs 5 classes" in result["fewshot_skipped"]
    assert (result["n_train"], result["n_test"], result["num_classes"]) == (50, 2, 3)
    assert result["knn_k"] == 20


def test_optional_protocols_and_k_clipping():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = np.arange(12) % 6
    result = evaluate(torch.from_numpy(x), torch.from_numpy(y), x, y, linear=False,
                      fewshot=False)
    assert result["linear_top1"] is None
    assert result["fewshot_mean"] is None and result["fewshot_skipped"] == "not requested"
    assert result["knn_k"] == 12
    assert set(result["seconds"]) == {"knn"}


def test_unlabelled_split_is_a_clear_error():
    x = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="test split has no labels"):
        evaluate(x, np.zeros(3), x, None)


def test_evaluate_backbone_on_digits(digits_split):
    """A random linear map keeps most of the pixel geometry: well above chance (0.1)."""
    train, test = digits_split
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
    result = evaluate_backbone(backbone, train, test, transform=None, batch_size=500,
                               linear=False, fewshot=False)
    assert result["feature_dim"] == 32
    assert result["knn_top1"] > 0.8
