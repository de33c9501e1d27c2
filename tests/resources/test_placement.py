"""The bundles a run asks Ray for: one list, for `launch.py check` and for a sweep's trials."""

from __future__ import annotations

import pytest

from adasim_ray.config import load_config
from adasim_ray.presets import default_config_path
from adasim_ray.resources.placement import (
    Bundle,
    Node,
    assign,
    check_fit,
    place,
    run_bundles,
    shard_nodes,
    totals,
)
from adasim_ray.sweep.tuner import trial_resources

CASES = [
    [],
    ["ray.num_workers=0"],
    ["ray.num_workers=0", "ray.use_gpu=true", "ray.fetch_cpus=0.5"],
    ["ray.num_workers=4", "ray.use_gpu=true", "ray.cache_shards=2", "ray.cache_shard_gpus=0.5",
     "ray.cache_shard_cpus=1", "ray.fetch_cpus=0.25", "batch_size=64"],
]


def _cfg(sets: list[str]):
    return load_config(default_config_path(), sets)


def test_a_loop_in_the_driver_is_counted_as_one_worker():
    bundles = run_bundles(_cfg(["ray.num_workers=0", "ray.cpus_per_worker=3"]))
    loops = [b for b in bundles if b.what == "training loop (driver)"]
    assert loops == [Bundle("training loop (driver)", 3.0, 0.0)]
    assert not any(b.what == "Train worker" for b in bundles)
    with_workers = run_bundles(_cfg(["ray.num_workers=2", "batch_size=64"]))
    assert not any(b.what == "training loop (driver)" for b in with_workers)
    assert sum(b.what == "Train worker" for b in with_workers) == 2


@pytest.mark.parametrize("sets", CASES, ids=lambda s: " ".join(s) or "demo")
def test_a_trial_reserves_what_check_places(sets):
    cfg = _cfg(sets)
    cpus, gpus = totals(run_bundles(cfg))
    assert trial_resources(cfg) == {"CPU": cpus, "GPU": gpus}


def test_trial_resources_with_the_loop_in_the_driver():
    # 2 CPUs for the loop (the demo's cpus_per_worker) + 2 fetch tasks x 0.5 CPU; its GPU.
    cfg = _cfg(["ray.num_workers=0", "ray.use_gpu=true", "ray.fetch_cpus=0.5"])
    assert trial_resources(cfg) == {"CPU": 3.0, "GPU": 1.0}


def test_first_fit_placement_with_fractional_gpus():
    nodes = [Node("a", 4.0, 1.0)]
    shards = [Bundle("cache shard", 0.0, 0.25)] * 4
    assert place(nodes, shards) == []
    assert place(nodes, [*shards, Bundle("cache shard", 0.0, 0.25)]) == [shards[0]]
    fit = check_fit(nodes, [*shards, Bundle("Train worker", 8.0, 0.0)], "a")
    assert not fit["fits"] and fit["unplaced"] == "1 Train worker x (8 CPU)"
    assert fit["needed"] == {"CPU": 8.0, "GPU": 1.0} and fit["available"] == {"CPU": 4, "GPU": 1}


def test_one_gpu_shared_by_a_worker_and_its_cache_shards():
    """gpu_check's layout: a worker on half the GPU, two shards on a quarter each."""
    sets = ["ray.use_gpu=true", "ray.gpus_per_worker=0.5", "ray.cache_shards=2",
            "ray.cache_shard_gpus=0.25"]
    bundles = run_bundles(_cfg(sets))
    assert [b.gpus for b in bundles if b.gpus] == [0.5, 0.25, 0.25]  # the worker first
    assert place([Node("gpu", 16.0, 1.0)], bundles) == []
    assert place([Node("gpu", 16.0, 1.0)], run_bundles(_cfg(sets[:1] + sets[2:])))


def test_shortfall_names_the_field_that_runs_short():
    from adasim_ray.resources.placement import shortfall

    laptop = [Node("laptop", 2.0, 0.0)]
    assert shortfall(_cfg(["ray.num_workers=1"]), laptop) is None  # the demo fits 2 cores
    assert shortfall(_cfg(["ray.num_workers=2"]), laptop) == (
        "ray.cpus_per_worker: 2 Train workers x 2 CPUs = 4, this cluster has 2 CPUs")
    assert shortfall(_cfg(["ray.num_workers=1", "ray.cpus_per_worker=3"]), laptop) == (
        "ray.cpus_per_worker: a Train worker asks 3 CPUs, the largest node has 2")
    assert shortfall(_cfg(["ray.use_gpu=true"]), laptop) == (
        "ray.use_gpu: a Train worker asks 1 GPU, the largest node has 0")
    shards = _cfg(["ray.cpus_per_worker=1", "ray.cache_shards=4", "ray.cache_shard_cpus=1"])
    assert shortfall(shards, laptop) == (
        "ray.cache_shard_cpus: 4 cache shards x 1 CPUs = 4 (+ 1 for the rest of the run), "
        "this cluster has 2 CPUs")
    # enough in total, but no node holds a 2-CPU worker next to the other
    split = [Node("a", 2.0, 0.0), Node("b", 1.0, 0.0), Node("c", 1.0, 0.0)]
    line = shortfall(_cfg(["ray.num_workers=2", "batch_size=64"]), split)
    assert line.startswith("resources: the run's requests fit the cluster's totals but not")


def test_cache_shards_are_placed_after_the_workers_never_in_their_place():
    # 8 GPUs for 8 workers, the shards' quarter-GPUs left for the head: placed shards-first
    # (as Ray's SPREAD could), a shard on the GPU node leaves 7.75 GPUs for 8 workers: a hang.
    head, gpus = Node("head", 1, 1), Node("gpu", 96, 8)  # a head too small for a worker
    cfg = _cfg(["ray.num_workers=8", "ray.use_gpu=true", "ray.cache_shards=4",
                "ray.cache_shard_gpus=0.25", "batch_size=64"])
    bundles = run_bundles(cfg)
    assert [b.what for b in bundles[:9]] == ["Train worker"] * 8 + ["cache shard"]
    assert [n.name for n in shard_nodes(cfg, [gpus, head])] == ["head"] * 4
    shards_first = [b for b in bundles if b.what == "cache shard"] + [
        b for b in bundles if b.what != "cache shard"]
    assert place([gpus, head], shards_first)  # the order is what keeps the workers whole


def test_accelerator_types_keep_workers_and_shards_on_their_nodes():
    cache = Node("cache", 192, 8, accelerators=frozenset({"A10G"}))
    a100 = Node("a100", 96, 8, accelerators=frozenset({"A100"}))
    cfg = _cfg(["ray.num_workers=8", "ray.use_gpu=true", "ray.accelerator_type=A100",
                "ray.cache_shards=2", "ray.cache_shard_gpus=1",
                "ray.cache_shard_accelerator_type=A10G", "batch_size=64"])
    bundles = run_bundles(cfg)
    pairs = list(zip(bundles, assign([cache, a100], bundles), strict=True))
    assert {n.name for b, n in pairs if b.what == "Train worker"} == {"a100"}
    assert {n.name for b, n in pairs if b.what == "cache shard"} == {"cache"}
    no_kind = _cfg(["ray.num_workers=8", "ray.use_gpu=true", "batch_size=64"])
    assert place([cache], run_bundles(no_kind)) == []  # any GPU will do without a type
    assert len(place([cache], run_bundles(cfg))) == 8  # no A100 there: 8 workers unplaced


def test_a_shard_larger_than_a_node_memory_does_not_fit_there():
    small, big = Node("small", 64, 0, memory=8e9), Node("big", 64, 0, memory=64e9)
    cfg = _cfg(["ray.cache_shards=2", "ray.cpus_per_worker=1"])
    assert [n.name for n in shard_nodes(cfg, [small, big], shard_memory=30e9)] == ["big", "big"]
    assert shard_nodes(cfg, [small, big], shard_memory=40e9)[1] is None
    assert shard_nodes(cfg, [Node("unknown", 64, 0)], shard_memory=1e15)[0] is not None
