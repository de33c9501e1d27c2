"""The engine against a brute-force reference written from the paper's equations (Eq. 4 to 11).

The reference loops over images and candidates in float64 with plain Python containers; the
engine must give the same top-K sets, the same windowed supports and scores, and the same
partners (given the same Gumbel noise), for several N, d, w, K, tau and shard counts, with exact
ties (duplicated images), windows longer than the epochs seen so far, and each image meeting its
own stale cache entry.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adasim_ray.engine import BootstrapConfig, Bootstrapper
from adasim_ray.engine.partners import gumbel_noise


def rank(cands: dict[int, float], self_id: int) -> list[tuple[int, float]]:
    """The engine's documented order: value desc, the anchor itself first, then id asc."""
    return sorted(cands.items(), key=lambda kv: (-kv[1], kv[0] != self_id, kv[0]))


class ReferenceAdaSim:
    """Algorithm 1 with Eq. 4 (similarity), Eq. 11 (windowed score) and the adaptive rule."""

    def __init__(self, n: int, cfg: BootstrapConfig) -> None:
        self.n, self.cfg = n, cfg
        self.cache: dict[int, np.ndarray] = {}  # rows written so far
        self.history: list[dict[int, list[tuple[int, float]]]] = []  # per epoch: i -> S^(e)
        self.current: dict[int, list[tuple[int, float]]] = {}

    def step(self, ids: list[int], feats: np.ndarray) -> None:
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        for i, z in zip(ids, feats, strict=True):
            m = {j: float(np.dot(z, zj)) for j, zj in self.cache.items()}  # Eq. 4, before writing
            self.current[i] = rank(m, i)[: self.cfg.topk]
        for i, z in zip(ids, feats, strict=True):
            self.cache[i] = z

    def end_epoch(self) -> None:
        self.history.append(self.current)
        self.current = {}

    def support(self, i: int) -> list[tuple[int, float]]:
        """Eq. 11 over the last w epochs: (1/w) sum 1[j in S^(e)] m^(e)(j), top K of the union."""
        window = self.history[-self.cfg.window :]
        score: dict[int, float] = {}
        for epoch in window:
            for j, m in epoch.get(i, []):
                score[j] = score.get(j, 0.0) + m
        score = {j: s / self.cfg.window for j, s in score.items()}
        return rank(score, i)[: self.cfg.topk]

    def plan(self, noise: np.ndarray) -> list[int]:
        epoch = len(self.history)
        partners = []
        for i in range(self.n):
            sup = self.support(i)
            if self.cfg.mode == "none" or epoch < self.cfg.window or not sup or sup[0][0] != i:
                partners.append(i)
            elif self.cfg.tau == 0:
                partners.append(sup[0][0])
            else:
                logits = [s / self.cfg.tau + noise[i, t] for t, (_, s) in enumerate(sup)]
                partners.append(sup[int(np.argmax(logits))][0])
        return partners


def make_features(n: int, d: int, epochs: int, seed: int, lattice: bool) -> np.ndarray:
    """(epochs, n, d) features: a fixed image code plus per-epoch augmentation noise.

    ``lattice`` features have exactly four entries of +-0.5 (unit norm, and every dot product a
    multiple of 0.25, exact in any summation order): many exact ties, including images tied
    with their own stale entry. Gaussian features have no ties.
    """
    rng = np.random.default_rng(seed)
    if not lattice:
        base = rng.normal(size=(n, d))
        return (base[None] + 0.6 * rng.normal(size=(epochs, n, d))).astype(np.float32)
    feats = np.zeros((epochs, n, d), dtype=np.float32)
    pool = rng.integers(0, 3, size=n)  # images of a "class" share a few codes
    for e in range(epochs):
        for i in range(n):
            r = np.random.default_rng([seed, pool[i], int(rng.integers(0, 2))])
            pos = r.choice(d, size=4, replace=False)
            feats[e, i, pos] = 0.5 * r.choice([-1.0, 1.0], size=4)
    return feats


CASES = [
    # n, d, w, K, tau, shards, epochs, batch, lattice (exact ties)
    (12, 4, 1, 3, 0.2, 1, 3, 5, False),
    (30, 8, 2, 5, 0.1, 3, 4, 7, False),
    (25, 6, 3, 2, 0.5, 2, 5, 25, True),
    (40, 16, 5, 4, 0.2, 4, 3, 9, False),  # w larger than the epochs seen: never bootstraps
    (17, 4, 2, 17, 1.0, 2, 4, 4, True),  # K = N
    (20, 5, 2, 3, 0.0, 2, 4, 6, True),  # tau = 0
    (33, 6, 2, 4, 0.3, 3, 5, 8, True),
    (28, 4, 1, 6, 2.0, 4, 4, 5, True),
]


@pytest.mark.parametrize(("n", "d", "w", "k", "tau", "shards", "epochs", "batch", "lattice"), CASES)
def test_engine_matches_reference(n, d, w, k, tau, shards, epochs, batch, lattice):
    seed = 3
    cfg = BootstrapConfig(mode="adasim", tau=tau, window=w, topk=k, cache_dtype="float32",
                          sim_dtype="float32")
    engine = Bootstrapper(n, d, cfg, shards=shards, seed=seed)
    ref = ReferenceAdaSim(n, cfg)
    feats = make_features(n, d, epochs, seed=n + d, lattice=lattice)
    rng = np.random.default_rng(1)
    saw_self_in_topk = saw_tie = False
    bootstrapped = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch):
            ids = order[lo : lo + batch]
            top = engine.step(torch.from_numpy(ids), torch.from_numpy(feats[epoch, ids]))
            ref.step(ids.tolist(), feats[epoch, ids].astype(np.float64))
            for row, i in enumerate(ids):
                want = ref.current[int(i)]
                got_ids = [j for j in top.ids[row].tolist() if j >= 0]
                assert got_ids == [j for j, _ in want], f"epoch {epoch} image {i}"
                np.testing.assert_allclose(
                    top.sims[row, : len(want)].numpy(), [m for _, m in want], atol=1e-5
                )
                saw_self_in_topk |= int(i) in got_ids
                saw_tie |= len({m for _, m in want}) < len(want)
        engine.end_epoch()
        ref.end_epoch()
        # supports and scores of Eq. 11, for every image
        for shard in engine.shards:
            from adasim_ray.engine.partners import windowed_support

            self_ids = torch.arange(shard.start, shard.stop)
            sup, scores = windowed_support(*shard.window.rows(0, shard.window.size), self_ids, w, k)
            for row, i in enumerate(self_ids.tolist()):
                want = ref.support(i)
                assert [j for j in sup[row].tolist() if j >= 0] == [j for j, _ in want]
                np.testing.assert_allclose(
                    scores[row, : len(want)].numpy(), [s for _, s in want], atol=1e-5
                )
        noise = gumbel_noise(seed, epoch + 1, 0, n, k).numpy()
        assert engine.partner_plan().tolist() == ref.plan(noise), f"plan after epoch {epoch}"
        bootstrapped += int((engine.partner_plan() != torch.arange(n)).sum())
    assert saw_self_in_topk, "images never met their own stale entry"
    assert saw_tie or not lattice, "the lattice case was meant to exercise exact ties"
    if tau > 0 and epochs > w:
        assert bootstrapped > 0, "the case was meant to exercise sampling"
    if epochs <= w or tau == 0:
        assert engine.partner_plan().tolist() == list(range(n))


def test_shard_count_does_not_change_anything():
    n, d = 50, 8
    feats = make_features(n, d, 4, seed=7, lattice=True)
    plans = []
    for shards in (1, 2, 3, 7):
        cfg = BootstrapConfig(mode="adasim", tau=0.3, window=2, topk=4, cache_dtype="float32")
        engine = Bootstrapper(n, d, cfg, shards=shards, seed=11)
        order_rng = np.random.default_rng(0)
        history = []
        for epoch in range(4):
            order = order_rng.permutation(n)
            for lo in range(0, n, 8):
                ids = torch.from_numpy(order[lo : lo + 8])
                top = engine.step(ids, torch.from_numpy(feats[epoch, ids.numpy()]))
                history.append(top.ids.clone())
            engine.end_epoch()
            history.append(engine.partner_plan())
        plans.append(history)
    for other in plans[1:]:
        for a, b in zip(plans[0], other, strict=True):
            assert torch.equal(a, b)


def test_nn_mode_is_top1_excluding_self():
    n, d = 15, 4
    cfg = BootstrapConfig(mode="nn", tau=0.2, window=3, topk=3, cache_dtype="float32",
                          sim_dtype="float32")
    engine = Bootstrapper(n, d, cfg, shards=2)
    ref = ReferenceAdaSim(n, cfg)
    feats = make_features(n, d, 3, seed=2, lattice=False)
    for epoch in range(3):
        ids = np.arange(n)
        engine.step(torch.from_numpy(ids), torch.from_numpy(feats[epoch]))
        ref.step(ids.tolist(), feats[epoch].astype(np.float64))
        engine.end_epoch()
        ref.end_epoch()
        want = []
        for i in range(n):
            others = [j for j, _ in ref.history[-1][i] if j != i]
            want.append(others[0] if others else i)
        assert engine.partner_plan().tolist() == want
    assert (engine.partner_plan() != torch.arange(n)).all()


def test_plain_baseline_and_tau_zero_never_bootstrap():
    n, d = 30, 6
    feats = make_features(n, d, 5, seed=5, lattice=True)
    for cfg in (
        BootstrapConfig(mode="none", tau=0.5, window=1, topk=4, cache_dtype="float32"),
        BootstrapConfig(mode="adasim", tau=0.0, window=1, topk=4, cache_dtype="float32"),
    ):
        engine = Bootstrapper(n, d, cfg, shards=2)
        for epoch in range(5):
            engine.step(torch.arange(n), torch.from_numpy(feats[epoch]))
            metrics = engine.end_epoch()
            assert torch.equal(engine.partner_plan(), torch.arange(n))
            assert metrics["bootstrap_ratio"] == 0.0


def test_bootstrapping_happens_with_positive_tau():
    n, d = 30, 6
    feats = make_features(n, d, 4, seed=5, lattice=True)  # many ties with self
    cfg = BootstrapConfig(mode="adasim", tau=1.0, window=1, topk=4, cache_dtype="float32")
    engine = Bootstrapper(n, d, cfg)
    for epoch in range(4):
        engine.step(torch.arange(n), torch.from_numpy(feats[epoch]))
        metrics = engine.end_epoch()
    assert metrics["bootstrap_ratio"] > 0
    assert not math.isnan(metrics["bootstrap_ratio"])
