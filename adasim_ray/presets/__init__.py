"""Configs shipped inside the package: ``demo.yaml``, the run that ``launch.py pretrain``
starts without ``--config`` (and the base of a sweep file without ``base:``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_CONFIG = "demo.yaml"


def default_config_path() -> Path:
    """The embedded default run: DINO-2 + AdaSim on MNIST, sized for 2 CPU cores."""
    return Path(str(resources.files(__name__).joinpath(DEFAULT_CONFIG)))
