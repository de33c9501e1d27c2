"""A finished run, opened for the commands that read its cache and window (``audit``,
``visualize neighbours``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adasim_ray.config import config_from_dict
from adasim_ray.configfile import read_yaml
from adasim_ray.errors import UserError
from adasim_ray.rundir.checkpoint import latest_checkpoint
from adasim_ray.rundir.layout import CONFIG, join, require_run_dir


def open_finished_run(run_dir: str | Path, command: str) -> tuple[str, Any, str | Path]:
    """(run directory, its config, its latest complete checkpoint) for a command that reads a
    run's cache and window, on a local disk or object storage (``s3://bucket/runs/RUN``); a
    UserError prefixed with ``command`` when there is none."""
    run_dir = require_run_dir(run_dir, command)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"{command}: {run_dir} has no complete checkpoint (cache and window) yet")
    return run_dir, config_from_dict(read_yaml(join(run_dir, CONFIG))), checkpoint
