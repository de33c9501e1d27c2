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


# A fetch task cancelled (Ray's KeyboardInterrupt, when a run ends) while its process imports
# torch for the first time (its config comes pickled, as to a Ray Data task): 0.3 s into the
# first fetch, well inside torch's import (seconds).
CUT_SHORT = """
import signal, sys
import numpy as np
from adasim_ray.train.pipeline import fetch_pairs

def cancel(*_):
    raise KeyboardInterrupt
config = open(sys.argv[1], "rb").read()
assert "torch" not in sys.modules
signal.signal(signal.SIGALRM, cancel)
signal.setitimer(signal.ITIMER_REAL, 0.3)
fetch_pairs({"item": np.arange(16)}, "launch", config, run_name="run", num_images=64, rank=0,
            world=1, batch_size=16)
print("fetched")
"""


def test_a_fetch_cancelled_in_its_first_import_of_torch_ends_its_process(tmp_path):
    """The import cut short leaves torch half-initialised in the process for good (a pooled
    Ray worker would fail every later run's fetch with it): the process exits instead."""
    import subprocess
    import sys

    from adasim_ray.config import load_config
    from adasim_ray.train.pipeline import CUT_SHORT_EXIT

    config = tmp_path / "config.pkl"
    config.write_bytes(cloudpickle.dumps(load_config(None, ["data=digits", "limit_images=64",
                                                            "batch_size=16"])))
    done = subprocess.run([sys.executable, "-c", CUT_SHORT, str(config)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == CUT_SHORT_EXIT, done.stdout + done.stderr[-2000:]
    assert "fetched" not in done.stdout
