"""The supervised oracle (Section 4.4): same-class partners, the 1 -> p schedule, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adasim_ray.engine import BootstrapConfig, Bootstrapper, BootstrapShard, NeighbourWindow
from adasim_ray.engine.oracle import ClassMembers, oracle_partners, standard_pair_probability
from adasim_ray.engine.partners import plan_window


def labels_of(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, classes, n))


def plan(labels: torch.Tensor, epoch: int, epochs: int, p: float, seed: int = 0, shards: int = 1):
    """The oracle plan of ``epoch`` through the engine's shards (``epoch`` closed epochs)."""
    n = len(labels)
    cfg = BootstrapConfig(mode="oracle", window=2, topk=2, oracle_p=p, cache_dtype="float32")
    boot = Bootstrapper(n, 4, cfg, shards=shards, labels=labels, seed=seed, epochs=epochs)
    stats = None
    for _ in range(epoch):
        stats = boot.end_epoch()
    return boot.partner_plan(), stats


def test_schedule_goes_linearly_from_one_to_p():
    assert [standard_pair_probability(e, 5, 0.5) for e in range(5)] == [
        1.0,
        0.875,
        0.75,
        0.625,
        0.5,
    ]
    assert standard_pair_probability(0, 1, 0.0) == 1.0  # a one-epoch run: the start value
    assert standard_pair_probability(9, 5, 0.2) == 0.2  # past the end: p


def test_partners_share_the_class_and_are_never_self_when_drawn():
    labels = labels_of(5000, 7)
    partners, _ = plan(labels, epoch=9, epochs=10, p=0.0)  # last epoch, p = 0: all drawn
    ids = torch.arange(len(labels))
    assert torch.equal(labels[partners], labels)
    assert bool((partners != ids).all())


def test_partners_cover_the_class_uniformly():
    labels = torch.tensor([0] * 5 + [1] * 3)
    members = ClassMembers(labels)
    counts = np.zeros((8, 8))
    for epoch in range(4000):
        chosen = oracle_partners(members, 0, 8, epoch + 1, 2, 0.0, 7).numpy()
        counts[np.arange(8), chosen] += 1
    freq = counts / counts.sum(axis=1, keepdims=True)
    assert np.allclose(freq[0, 1:5], 0.25, atol=0.03) and freq[0, 0] == 0
    assert np.allclose(freq[5, 6:8], 0.5, atol=0.03) and freq[5, :6].sum() == 0


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_fraction_of_standard_pairs_follows_the_schedule(p):
    n, epochs = 20000, 6
    labels = labels_of(n, 10)
    ids = torch.arange(n)
    for epoch in (0, 3, epochs - 1):
        partners, stats = plan(labels, epoch=epoch, epochs=epochs, p=p)
        want = standard_pair_probability(epoch, epochs, p)
        got = float((partners == ids).float().mean())
        sigma = math.sqrt(want * (1 - want) / n)
        assert abs(got - want) <= 4 * sigma + 1e-12, (epoch, got, want)
        if stats is not None:  # bootstrap_ratio = share of j* != i
            assert stats["bootstrap_ratio"] == pytest.approx(1 - got)
            assert stats["nn_top1"] == 1.0  # same class by construction


def test_plan_is_deterministic_and_independent_of_sharding():
    labels = labels_of(3000, 5)
    one, _ = plan(labels, epoch=2, epochs=5, p=0.3, seed=4)
    again, _ = plan(labels, epoch=2, epochs=5, p=0.3, seed=4)
    three, _ = plan(labels, epoch=2, epochs=5, p=0.3, seed=4, shards=3)
    other_seed, _ = plan(labels, epoch=2, epochs=5, p=0.3, seed=5)
    next_epoch, _ = plan(labels, epoch=3, epochs=5, p=0.3, seed=4)
    assert torch.equal(one, again) and torch.equal(one, three)
    assert not torch.equal(one, other_seed)
    assert not torch.equal(one, next_epoch)


def test_unknown_labels_and_singleton_classes_keep_self():
    labels = torch.tensor([-1, 0, 0, 1, -1, 2])
    partners = oracle_partners(ClassMembers(labels), 0, 6, epoch=1, epochs=2, p=0.0, seed=0)
    assert partners.tolist() == [0, 2, 1, 3, 4, 5]


def test_no_labels_is_refused():
    cfg = BootstrapConfig(mode="oracle", window=1, topk=2)
    with pytest.raises(ValueError, match="oracle.*labels"):
        BootstrapShard(10, 0, 10, 4, cfg, epochs=3)
    window = NeighbourWindow(0, 10, window=1, topk=2)
    window.end_epoch()
    with pytest.raises(ValueError, match="oracle.*labels"):
        plan_window(window, cfg)


@pytest.mark.parametrize(("field", "value"), [("oracle_p", -0.1), ("oracle_p", 1.5)])
def test_bad_oracle_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BootstrapConfig(mode="oracle", **{field: value}).validate()


def test_a_run_of_no_epochs_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        Bootstrapper(4, 2, BootstrapConfig(mode="oracle"), labels=torch.arange(4), epochs=0)


def test_window_is_still_filled_for_the_metrics():
    labels = torch.tensor([0, 0, 1, 1])
    cfg = BootstrapConfig(mode="oracle", window=1, topk=2, oracle_p=0.0, cache_dtype="float32")
    boot = Bootstrapper(4, 2, cfg, labels=labels, epochs=2)
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    boot.step(torch.arange(4), feats)
    boot.end_epoch()
    boot.step(torch.arange(4), feats)
    metrics = boot.end_epoch()
    window = boot.shards[0].window
    assert window.epochs_closed == 2
    assert window.latest_rows(0, 4).tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    assert metrics["bootstrap_ratio"] == 1.0 and metrics["nn2_top1"] == 1.0
