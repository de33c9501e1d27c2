"""Shared fixtures: one local Ray for the whole test session (started on first use)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once per test session and shut down at its end."""
    import ray

    from adasim_ray.train.run import start_local_ray

    if not ray.is_initialized():
        # The dashboard stays on: Ray Train frees stopped runs' placement groups through it.
        start_local_ray(num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
