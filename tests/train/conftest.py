"""The uninterrupted two-worker run, made once per test session on the session's Ray: the
two-worker test checks it, and the run that loses a node (tests/train/test_node_loss.py) must
end as it does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.train.tiny import TWO_WORKERS


@pytest.fixture(scope="session")
def two_worker_run(ray_session, tmp_path_factory) -> dict[str, Any]:
    """The summary of :data:`~tests.train.tiny.TWO_WORKERS` run to its end."""
    from adasim_ray.config import load_config
    from adasim_ray.train.run import pretrain

    return pretrain(load_config(None, TWO_WORKERS), str(tmp_path_factory.mktemp("two")),
                    log_every=1000)
