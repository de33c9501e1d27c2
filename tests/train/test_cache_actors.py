"""The cache shard actors: S = 1 and S = 2 give the same plan as the in-process engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasim_ray.engine import BootstrapConfig, Bootstrapper

pytestmark = pytest.mark.ray


def test_sharded_actors_match_the_engine(ray_session):
    from adasim_ray.train.cache_actor import ShardedCache, create_shard_actors

    n, d, epochs = 90, 8, 3
    cfg = BootstrapConfig(mode="adasim", tau=0.5, window=1, topk=4, cache_dtype="float32",
                          sim_dtype="float32")
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, d))
    labels = rng.integers(0, 3, size=n)
    plans, metrics = [], []
    for shards in (1, 2):
        handles = create_shard_actors(
            f"test-{shards}",
            n,
            d,
            cfg,
            shards,
            seed=5,
            epochs=epochs,
            labels=labels,
        )
        cache = ShardedCache(handles, cfg.topk, max_in_flight=2)
        run_plans, run_metrics = [], []
        for epoch in range(epochs):
            order = np.random.default_rng(epoch).permutation(n)
            for lo in range(0, n, 16):
                ids = order[lo : lo + 16]
                noise = np.random.default_rng([epoch, lo]).normal(size=(len(ids), d))
                cache.submit(ids, (base[ids] + 0.5 * noise).astype(np.float32))
            run_metrics.append(cache.end_epoch())
            run_plans.append(cache.partners())
        plans.append(run_plans)
        metrics.append(run_metrics)
        for h in handles:
            ray_session.kill(h)
    for a, b in zip(plans[0], plans[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert metrics[0] == metrics[1]
    assert (plans[0][-1] != np.arange(n)).any(), "the test was meant to bootstrap"

    # and both equal the in-process engine fed the same batches
    engine = Bootstrapper(n, d, cfg, shards=1, seed=5, epochs=epochs,
                          labels=torch.from_numpy(labels))
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(n)
        for lo in range(0, n, 16):
            ids = order[lo : lo + 16]
            noise = np.random.default_rng([epoch, lo]).normal(size=(len(ids), d))
            engine.step(
                torch.from_numpy(ids),
                torch.from_numpy((base[ids] + 0.5 * noise).astype(np.float32)),
            )
        engine.end_epoch()
        np.testing.assert_array_equal(engine.partner_plan().numpy(), plans[0][epoch])
