"""What the processes that never train get of a run: Ray Train's controller and dataset manager
unpickle its datasets, whose fetch kwargs hold plain values and the config as bytes (the
modules themselves import no torch: ``tests/test_import_graph.py``)."""

from __future__ import annotations

from ray import cloudpickle


def test_the_fetch_gets_its_config_as_bytes_and_unpickles_it_whole(ray_session):
    from adasim_ray.config import load_config
    from adasim_ray.train.pipeline import rank_dataset

    cfg = load_config(None, ["data=digits", "limit_images=64", "batch_size=16"])
    dataset = rank_dataset(cfg, "run", 64, 0, 1, 16, "launch")
    [kwargs] = [op.fn_kwargs for op in _map_ops(dataset)]
    assert {type(v) for v in kwargs.values()} <= {str, int, bytes}
    assert cloudpickle.loads(kwargs["config"]) == cfg


def _map_ops(dataset):
    """The logical plan's map operators (Ray Data keeps ``fn_kwargs`` on them)."""
    found, todo = [], [dataset._logical_plan.dag]
    while todo:
        op = todo.pop()
        if getattr(op, "fn_kwargs", None) is not None:
            found.append(op)
        todo.extend(op.input_dependencies)
    return found
