"""Partner sampling: frequencies follow softmax(score / tau), seeding, and saved state."""

from __future__ import annotations

import numpy as np
import torch

from adasim_ray.engine import BootstrapConfig, Bootstrapper, NeighbourWindow, plan_window


def window_with_fixed_support(n: int, sims: list[float], epochs: int, w: int) -> NeighbourWindow:
    """Every image i has support (i, i+1, i+2, ...) mod n with the same similarities each epoch."""
    k = len(sims)
    win = NeighbourWindow(0, n, window=w, topk=k, sim_dtype="float32")
    ids = torch.arange(n)
    nbrs = (ids.unsqueeze(1) + torch.arange(k)) % n
    for _ in range(epochs):
        win.record(ids, nbrs, torch.tensor(sims).expand(n, k))
        win.end_epoch()
    return win


def test_partner_frequencies_match_softmax():
    n, sims, tau = 40000, [0.9, 0.85, 0.7, 0.6], 0.1
    win = window_with_fixed_support(n, sims, epochs=2, w=2)
    cfg = BootstrapConfig(mode="adasim", tau=tau, window=2, topk=4)
    partners, stats = plan_window(win, cfg, seed=123)
    offsets = ((partners - torch.arange(n)) % n).numpy()
    freq = np.bincount(offsets, minlength=4) / n
    scores = np.array(sims)  # each epoch contributes sim, divided by w=2 epochs -> same mean
    want = np.exp(scores / tau) / np.exp(scores / tau).sum()
    # 40k draws: the standard error of each frequency is below 0.0025.
    np.testing.assert_allclose(freq, want, atol=0.01)
    assert stats.bootstrapped == int((offsets != 0).sum())


def test_sampling_depends_on_tau_and_scores_not_on_uniform_choice():
    n = 20000
    win = window_with_fixed_support(n, [0.9, 0.5], epochs=1, w=1)
    sharp, _ = plan_window(win, BootstrapConfig(mode="adasim", tau=0.05, window=1, topk=2))
    flat, _ = plan_window(win, BootstrapConfig(mode="adasim", tau=10.0, window=1, topk=2))
    share_self_sharp = float((sharp == torch.arange(n)).float().mean())
    share_self_flat = float((flat == torch.arange(n)).float().mean())
    assert share_self_sharp > 0.999  # exp(0.4 / 0.05) ~ 3000 : 1
    assert abs(share_self_flat - 1 / (1 + np.exp(-0.04))) < 0.02  # almost uniform


def test_no_bootstrap_when_self_is_not_first():
    n = 100
    win = NeighbourWindow(0, n, window=1, topk=2, sim_dtype="float32")
    ids = torch.arange(n)
    other = (ids + 1) % n
    win.record(ids, torch.stack([other, ids], 1), torch.tensor([[0.9, 0.8]]).expand(n, 2))
    win.end_epoch()
    partners, stats = plan_window(win, BootstrapConfig(mode="adasim", tau=5.0, window=1, topk=2))
    assert torch.equal(partners, ids) and stats.bootstrapped == 0


def test_same_seed_same_plan_and_other_seed_other_plan():
    win = window_with_fixed_support(5000, [0.8, 0.8, 0.8], epochs=3, w=3)
    cfg = BootstrapConfig(mode="adasim", tau=0.5, window=3, topk=3)
    a, _ = plan_window(win, cfg, seed=1)
    b, _ = plan_window(win, cfg, seed=1)
    c, _ = plan_window(win, cfg, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_first_w_epochs_use_standard_pairs():
    n = 50
    win = window_with_fixed_support(n, [0.9, 0.89], epochs=2, w=3)
    partners, _ = plan_window(win, BootstrapConfig(mode="adasim", tau=1.0, window=3, topk=2))
    assert torch.equal(partners, torch.arange(n))


def test_unseen_images_contribute_nothing_that_epoch():
    n = 6
    win = NeighbourWindow(0, n, window=2, topk=2, sim_dtype="float32")
    ids = torch.arange(n)
    nbrs = torch.stack([ids, (ids + 1) % n], 1)
    win.record(ids, nbrs, torch.tensor([[1.0, 0.5]]).expand(n, 2))
    win.end_epoch()
    win.record(ids[:3], nbrs[:3], torch.tensor([[1.0, 0.5]]).expand(3, 2))  # 3..5 unseen
    win.end_epoch()
    from adasim_ray.engine.partners import windowed_support

    support, scores = windowed_support(*win.rows(0, n), ids, 2, 2)
    np.testing.assert_allclose(scores[:3].numpy(), [[1.0, 0.5]] * 3)
    np.testing.assert_allclose(scores[3:].numpy(), [[0.5, 0.25]] * 3)  # one epoch of two


def test_state_round_trip_gives_identical_future():
    n, d = 60, 5
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, n, d)).astype(np.float32)
    cfg = BootstrapConfig(mode="adasim", tau=0.4, window=2, topk=3, cache_dtype="float16")
    full = Bootstrapper(n, d, cfg, shards=2, seed=9)
    for e in range(3):
        full.step(torch.arange(n), torch.from_numpy(feats[e]))
        full.end_epoch()
    saved = full.state_dict()
    restored = Bootstrapper(n, d, cfg, shards=2, seed=9)
    restored.load_state_dict(saved)
    for e in range(3, 6):
        for boot in (full, restored):
            boot.step(torch.arange(n), torch.from_numpy(feats[e]))
            boot.end_epoch()
        assert torch.equal(full.partner_plan(), restored.partner_plan())
    for a, b in zip(full.shards, restored.shards, strict=True):
        assert torch.equal(a.cache.rows, b.cache.rows)
        assert torch.equal(a.window.ids, b.window.ids)
        assert torch.equal(a.window.sims, b.window.sims)


def test_metrics_use_labels():
    n = 8
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    win = NeighbourWindow(0, n, window=1, topk=2, sim_dtype="float32")
    ids = torch.arange(n)
    partner = ids ^ 1  # 0<->1, 2<->3: same label
    win.record(ids, torch.stack([ids, partner], 1), torch.tensor([[0.9, 0.1]]).expand(n, 2))
    win.end_epoch()
    _, stats = plan_window(
        win, BootstrapConfig(mode="adasim", tau=0.0, window=1, topk=2), labels=labels
    )
    m = stats.metrics()
    assert m["bootstrap_ratio"] == 0.0
    assert m["nn_top1"] == 1.0  # j* = i
    assert m["nn2_top1"] == 1.0  # the runner-up has i's label


def _random_window(n: int, w: int, k: int, seed: int) -> NeighbourWindow:
    """A full window of random neighbours (half the images rank themselves first)."""
    gen = torch.Generator().manual_seed(seed)
    win = NeighbourWindow(0, n, window=w, topk=k, sim_dtype="float16")
    ids = torch.arange(n)
    for _ in range(w):
        nbrs = torch.randint(0, n, (n, k), generator=gen)
        first = torch.rand(n, generator=gen) < 0.5
        nbrs[:, 0] = torch.where(first, ids, nbrs[:, 0])
        sims = torch.sort(torch.rand(n, k, generator=gen), dim=1, descending=True)[0]
        win.record(ids, nbrs, sims)
        win.end_epoch()
    return win


def test_the_plan_is_the_same_whatever_its_threads_and_chunks():
    n, w, k = 6000, 3, 4
    win = _random_window(n, w, k, seed=5)
    labels = torch.arange(n) % 7
    saved = torch.get_num_threads()
    for mode in ("adasim", "nn", "none"):
        cfg = BootstrapConfig(mode=mode, tau=0.3, window=w, topk=k)
        one, one_stats = plan_window(win, cfg, labels, seed=9, threads=1, chunk_rows=n)
        many, many_stats = plan_window(win, cfg, labels, seed=9, threads=3, chunk_rows=700)
        assert torch.equal(one, many), mode
        assert one_stats == many_stats, mode
    assert torch.get_num_threads() == saved  # the pool's one-thread setting was put back


def test_without_labels_none_and_nn_read_no_support(monkeypatch):
    import adasim_ray.engine.partners as partners_module

    win = _random_window(2000, 2, 3, seed=1)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the Eq. 11 support was computed")

    monkeypatch.setattr(partners_module, "windowed_support", refuse)
    for mode in ("none", "nn"):
        partners, stats = plan_window(win, BootstrapConfig(mode=mode, window=2, topk=3))
        assert stats.images == 2000
        assert (partners == torch.arange(2000)).all() == (mode == "none")
