"""The audit's ranking on windows built by the engine from exact (raw-pixel) features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasim_ray.audit.scores import (
    StableNeighbours,
    duplicate_pairs,
    label_suspects,
    stable_neighbours,
)
from adasim_ray.data import open_source
from adasim_ray.engine import BootstrapConfig, Bootstrapper, NeighbourWindow


def test_stable_neighbours_drop_self_and_rank_by_eq11():
    win = NeighbourWindow(0, 3, window=2, topk=3, sim_dtype="float32")
    ids = torch.arange(3)
    # Epoch 1: 0 -> (0, 1, 2); epoch 2: 0 -> (0, 2, 1) with 2 stronger: 2 wins on the sum.
    win.record(ids, torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]]),
               torch.tensor([[1.0, 0.9, 0.5], [1.0, 0.9, 0.1], [1.0, 0.8, 0.5]]))  # fmt: skip
    win.end_epoch()
    win.record(ids, torch.tensor([[0, 2, 1], [1, 0, -1], [2, 0, 1]]),
               torch.tensor([[1.0, 0.95, 0.2], [1.0, 0.9, 0.0], [1.0, 0.6, 0.5]]))  # fmt: skip
    win.end_epoch()
    nbrs = stable_neighbours([win])
    assert nbrs.ids.tolist() == [[2, 1, -1], [0, 2, -1], [1, 0, -1]]
    assert nbrs.scores[0].tolist() == pytest.approx([(0.5 + 0.95) / 2, (0.9 + 0.2) / 2, 0.0])
    assert nbrs.scores[1, 1] == pytest.approx(0.1 / 2)  # met in one epoch of w = 2


def test_sharded_windows_give_the_same_neighbours():
    torch.manual_seed(0)
    feats = torch.randn(50, 8)
    cfg = BootstrapConfig(mode="none", window=2, topk=4, cache_dtype="float32")
    one, three = Bootstrapper(50, 8, cfg), Bootstrapper(50, 8, cfg, shards=3)
    for _ in range(2):
        noisy = feats + 0.1 * torch.randn(50, 8)
        for boot in (one, three):
            for lo in range(0, 50, 10):
                ids = torch.arange(lo, lo + 10)
                boot.step(ids, noisy[ids])
            boot.end_epoch()
    a = stable_neighbours([s.window for s in one.shards])
    b = stable_neighbours([s.window for s in three.shards])
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)


def test_a_label_among_another_class_ranks_first():
    # Image 3 (label 1) sits among images of class 0, which agree with each other.
    nbrs = StableNeighbours(
        np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [5, 0, -1], [4, 1, -1]]),
        np.array([[0.9, 0.8, 0.7]] * 4 + [[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]], np.float32),
    )
    labels = np.array([0, 0, 0, 1, 2, 2])
    suspects = label_suspects(nbrs, labels)
    assert suspects.ids[0] == 3 and suspects.suggested[0] == 0 and suspects.share[0] == 1.0
    assert suspects.agree[0] == 0.0
    last = dict(zip(suspects.ids.tolist(), suspects.share.tolist(), strict=True))
    assert last[4] == pytest.approx(0.1)  # mostly among its own class


def test_duplicates_rank_by_cosine_and_skip_unwritten_rows():
    nbrs = StableNeighbours(np.array([[1, 2], [0, 2], [0, 1]]), np.ones((3, 2), np.float32))
    rows = torch.tensor([[1.0, 0.0], [0.8, 0.6], [1.0, 0.0]])
    pairs = duplicate_pairs(nbrs, rows)
    assert list(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == [(0, 2), (0, 1), (1, 2)]
    assert pairs.cosine[0] == pytest.approx(1.0)
    pairs = duplicate_pairs(nbrs, rows, written=torch.tensor([True, True, False]))
    assert list(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == [(0, 1)]


def test_planted_cases_rank_at_the_top_with_exact_features(planted_digits):
    """With exact features (centred raw pixels, which is what a good feature space gives on
    digits) the window's stable neighbours find the planted cases."""
    planted = planted_digits
    source = open_source(f"parquet:{planted.root}", "train")
    pixels = np.stack(source.load_many(np.arange(len(source))))[..., 0].astype(np.float32)
    x = torch.from_numpy(pixels.reshape(len(source), -1) / 255.0)
    x = x - x.mean(dim=0)
    n = len(x)
    boot = Bootstrapper(n, x.shape[1], BootstrapConfig(mode="none", window=3, topk=10,
                                                       cache_dtype="float32"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, 64):
            boot.step(order[lo : lo + 64], x[order[lo : lo + 64]])
        boot.end_epoch()
    shard = boot.shards[0]
    nbrs = stable_neighbours([shard.window])
    suspects = label_suspects(nbrs, source.labels)
    found = np.isin(planted.flipped, suspects.ids[:40]).sum()
    assert found >= 18, f"{found} of 20 flipped labels in the top 40"  # measured: 20
    pairs = duplicate_pairs(nbrs, shard.cache.rows, shard.cache.written)
    top = set(zip(pairs.a[:10].tolist(), pairs.b[:10].tolist(), strict=True))
    assert len(top & set(planted.duplicates)) >= 9  # measured: 10 of 10
