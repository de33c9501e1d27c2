"""Prototypical-network few-shot episodes on data sets whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasim_ray.evaluation.fewshot import (
    confidence_interval95,
    eligible_classes,
    few_shot,
    nearest_prototype,
)


def clusters(num_classes: int, per_class: int, d: int, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(num_classes, d) * 10.0
    labels = np.repeat(np.arange(num_classes), per_class)
    feats = centres[labels] + spread * rng.standard_normal((len(labels), d))
    return feats.astype(np.float32), labels


def test_separated_clusters_are_always_right():
    feats, labels = clusters(8, 30, 16, spread=0.1)
    mean, ci95 = few_shot(feats, labels, episodes=100)
    assert mean == 1.0
    assert ci95 == 0.0


def test_pure_noise_is_at_chance_within_its_interval():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((1000, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 1000)
    mean, ci95 = few_shot(feats, labels, seed=2)  # 600 episodes, 5-way: chance is 0.2
    assert abs(mean - 0.2) < 2 * ci95 + 0.005
    # Per-episode accuracy is a mean of 75 Bernoulli(0.2) trials: std ~ sqrt(.2 * .8 / 75),
    # so the half-width is ~ 1.96 * 0.046 / sqrt(600) = 0.0037 (x2 slack either way).
    expected = 1.96 * np.sqrt(0.2 * 0.8 / 75) / np.sqrt(600)
    assert expected / 2 < ci95 < expected * 2


def test_ways_sets_chance_level():
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((600, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 600)
    mean, ci95 = few_shot(feats, labels, ways=2, episodes=400, seed=0)
    assert abs(mean - 0.5) < 3 * ci95 + 0.005


def test_confidence_interval_formula():
    accuracies = np.array([0.2, 0.4, 0.6, 0.8])
    # population std of the four values is sqrt(0.05)
    assert confidence_interval95(accuracies) == pytest.approx(1.96 * np.sqrt(0.05) / 2.0)
    assert confidence_interval95(np.full(600, 0.7)) == 0.0


def test_seed_reproducible_and_matters():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((400, 8)).astype(np.float32)
    labels = rng.integers(0, 8, 400)
    first = few_shot(feats, labels, episodes=50, seed=7)
    assert few_shot(feats, labels, episodes=50, seed=7) == first
    assert few_shot(torch.from_numpy(feats), torch.from_numpy(labels), episodes=50,
                    seed=7) == first
    assert few_shot(feats, labels, episodes=50, seed=8) != first


def test_hard_but_learnable_lies_between_chance_and_one():
    feats, labels = clusters(10, 40, 10, spread=4.0, seed=4)
    mean, ci95 = few_shot(feats, labels, seed=0)
    assert 0.3 < mean < 0.99
    assert ci95 > 0.0


def test_nearest_prototype_is_squared_euclidean_not_cosine():
    def unit(degrees):
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]

    # Class 0's supports disagree (+-70 degrees): prototype (0.342, 0), length 0.342.
    # Class 1's agree at 30 degrees: prototype of length 1. The query at 0 degrees has
    # cosine 1 to class 0's prototype but is nearer class 1's in squared Euclidean
    # distance (0.27 vs 0.43): ProtoNets (Eq. 2) says class 1.
    support = np.array([[unit(70), unit(-70), unit(70), unit(-70)], [unit(30)] * 4])
    query = np.array([unit(0), unit(-60), unit(30)])
    assert nearest_prototype(support, query).tolist() == [1, 0, 1]


def test_small_classes_are_excluded():
    feats, labels = clusters(6, 30, 8, spread=0.1)
    labels = labels.copy()
    labels[:11] = 6  # class 0 keeps 19 samples, new class 6 has 11: both too small for 20
    assert list(eligible_classes(labels, 20)) == [1, 2, 3, 4, 5]
    mean, _ = few_shot(feats, labels, ways=5, episodes=30)  # runs on the 5 that qualify
    assert mean == 1.0
    with pytest.raises(ValueError, match="6 classes with at least 20 samples.*only 5 of 7"):
        few_shot(feats, labels, ways=6)


def test_too_few_classes_is_a_clear_error():
    feats, labels = clusters(3, 50, 4, spread=0.1)
    with pytest.raises(ValueError, match="5-way 5-shot few-shot needs 5 classes"):
        few_shot(feats, labels)


@pytest.mark.parametrize("name", ["ways", "shots", "queries", "episodes"])
def test_bad_arguments(name):
    feats, labels = clusters(6, 30, 8, spread=0.1)
    with pytest.raises(ValueError, match=name):
        few_shot(feats, labels, **{name: 0})
