"""Configs shipped inside the package: ``demo.yaml``, the run that ``adasim-ray pretrain``
starts without ``--config`` (and the base of a sweep file without ``base:``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

DEFAULT_CONFIG = "demo.yaml"


def default_config_path() -> Path:
    """The embedded default run: DINO-2 + AdaSim on MNIST, sized for 2 CPU cores."""
    return Path(str(resources.files(__name__).joinpath(DEFAULT_CONFIG)))


# The demo's fields sized for its own data set (3,000 MNIST digits, 28 px crops that keep a
# digit's identity): on another data set they fall back to the defaults, so that the user's
# data is trained and evaluated whole, with the paper's crops, unless the user says otherwise.
DEMO_DATA = "mnist"
DEMO_DATA_SIZED = ("limit_images", "eval.max_train", "eval.max_test", "augment.crop_scale")


def demo_resets(data: str | None) -> list[str]:
    """``key=value`` overrides that undo the demo's data-sized fields when the demo runs on
    ``data`` instead of its own MNIST (an empty list for MNIST or no ``--data``)."""
    if data is None or data == DEMO_DATA:
        return []
    from adasim_ray.config import default_config  # noqa: PLC0415 - the config imports torch

    defaults = default_config()
    resets = []
    for dotted in DEMO_DATA_SIZED:
        value = defaults
        for key in dotted.split("."):
            value = getattr(value, key)
        resets.append(f"{dotted}={json.dumps(list(value) if isinstance(value, tuple) else value)}")
    return resets
