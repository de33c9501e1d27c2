"""What the processes that never train import: Ray Train's controller and dataset manager
unpickle the run's datasets, and the plan board's actor imports its class's module. None of
them needs torch (seconds of CPU per process at every start of a run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ray import cloudpickle

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm")


@pytest.mark.parametrize("module", ["adasim_ray.train.pipeline", "adasim_ray.train.board"])
def test_the_modules_of_the_plan_board_and_the_datasets_import_no_torch(module):
    probe = (f"import sys, {module}; "
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


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
