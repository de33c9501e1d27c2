"""Linear probe on frozen features: separable data, determinism, and its guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasim_ray.evaluation.linear import fit_linear_probe, linear_probe


def separable(n: int, num_classes: int, d: int, seed: int = 0):
    """Classes separated by a margin along their own axis, plus noise in the others."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    feats = rng.standard_normal((n, d)) * 0.3
    feats[np.arange(n), labels] += 3.0
    return feats.astype(np.float32), labels


@pytest.mark.parametrize(
    ("method", "options"), [("lbfgs", {}), ("adamw", {"epochs": 30, "batch_size": 64})]
)
def test_separable_data_is_solved(method, options):
    train_x, train_y = separable(600, 7, 16, seed=0)
    test_x, test_y = separable(300, 7, 16, seed=1)
    assert linear_probe(train_x, train_y, test_x, test_y, method=method, **options) == 1.0


def test_non_separable_labels_stay_near_chance():
    rng = np.random.default_rng(2)
    train_x = rng.standard_normal((500, 8)).astype(np.float32)
    test_x = rng.standard_normal((500, 8)).astype(np.float32)
    top1 = linear_probe(train_x, rng.integers(0, 4, 500), test_x, rng.integers(0, 4, 500))
    assert 0.15 < top1 < 0.35  # chance is 0.25


def test_scale_of_features_does_not_matter():
    # Standardisation makes tiny L2-normalised coordinates as easy as large ones.
    train_x, train_y = separable(400, 5, 12, seed=3)
    test_x, test_y = separable(200, 5, 12, seed=4)
    big = linear_probe(train_x * 100, train_y, test_x * 100, test_y)
    small = linear_probe(train_x * 1e-3, train_y, test_x * 1e-3, test_y)
    assert big == small == 1.0


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 10)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    for method in ("lbfgs", "adamw"):
        first = fit_linear_probe(x, y, method=method, seed=1, epochs=3)
        again = fit_linear_probe(x, y, method=method, seed=1, epochs=3)
        assert torch.equal(first.linear.weight, again.linear.weight)
    other = fit_linear_probe(x, y, method="adamw", seed=2, epochs=3)
    assert not torch.equal(other.linear.weight, again.linear.weight)


def test_probe_outputs_logits_for_every_class_and_trains_inside_inference_mode():
    train_x, train_y = separable(200, 3, 6)
    with torch.inference_mode():  # the CLI may call it from a no-grad context
        probe = fit_linear_probe(torch.from_numpy(train_x), torch.from_numpy(train_y),
                                 num_classes=5)
    logits = probe(torch.from_numpy(train_x))
    assert logits.shape == (200, 5)
    assert (logits.argmax(1).numpy() == train_y).mean() == 1.0
    assert not probe.training


def test_constant_dimension_and_single_sample_do_not_produce_nan():
    x = np.zeros((1, 4), dtype=np.float32)
    probe = fit_linear_probe(x, np.array([2]))
    assert torch.isfinite(probe.linear.weight).all()
    assert probe(torch.ones(1, 4)).argmax().item() == 2


def test_test_class_unseen_in_training_counts_as_wrong():
    train_x, train_y = separable(300, 3, 6, seed=6)
    test_x = np.eye(6, dtype=np.float32)[[0, 1, 2, 4]] * 3.0
    test_y = np.array([0, 1, 2, 4])
    assert linear_probe(train_x, train_y, test_x, test_y) == pytest.approx(0.75)


def test_guards():
    x = np.ones((4, 3), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="labels must have shape"):
        linear_probe(x, y[:3], x, y)
    with pytest.raises(ValueError, match="dimension"):
        linear_probe(x, y, np.ones((2, 5), dtype=np.float32), y[:2])
    with pytest.raises(ValueError, match=">= 0"):
        linear_probe(x, y - 1, x, y)
    with pytest.raises(ValueError, match="method"):
        fit_linear_probe(x, y, method="sgd")  # type: ignore[arg-type]


def test_a_half_bank_held_apart_trains_in_mini_batches_as_the_float32_one_does():
    """A run's bank in its cache dtype (half) stays as it is held: its statistics and its
    mini-batches are made a block at a time (device discipline: test_evaluation_device.py),
    and the probe learns what it learns of the same features in float32."""
    train_x, train_y = separable(600, 7, 16, seed=0)
    test_x, test_y = separable(300, 7, 16, seed=1)
    half = torch.from_numpy(train_x).half()
    with torch.inference_mode():  # as the features of a run's last evaluation come
        held = half.clone()
    streamed = fit_linear_probe(held, train_y, method="adamw", epochs=30, batch_size=64)
    whole = fit_linear_probe(half.float().numpy(), train_y, method="adamw", epochs=30,
                             batch_size=64)
    std, mean = torch.std_mean(half.float(), dim=0, correction=0)
    assert torch.allclose(streamed.mean, mean, atol=1e-6)
    assert torch.allclose(streamed.inv_std, whole.inv_std, rtol=1e-5)
    assert torch.allclose(streamed.linear.weight, whole.linear.weight, atol=1e-4)
    assert linear_probe(held, train_y, test_x, test_y, method="adamw", epochs=30,
                        batch_size=64) == 1.0
