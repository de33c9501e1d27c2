"""Set-up hooks that Ray runs in every worker process of a run: kept free of heavy imports
(torch, the data sets), since a hook runs before Ray hands the process its resources and
a torch imported here would fix its thread count before Ray sets ``OMP_NUM_THREADS``."""

from __future__ import annotations

import os


def pin_ray_address() -> None:
    """Point RAY_ADDRESS at this cluster.

    Ray Train frees a stopped run's placement group through the State API, which refuses to
    guess when several Ray instances run on one machine ("Found multiple active Ray
    instances"); the group then leaks and later runs wait forever for CPUs (measured here).
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
