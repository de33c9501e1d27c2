"""The recipes shipped inside the package, chosen with ``--preset NAME`` (imports no torch):

- ``demo``: DINO-2 + AdaSim on the embedded MNIST, sized for 2 CPU cores (``make demo``; the
  base of a sweep file without ``base:``);
- ``cpu``: your own images on a laptop's CPU: the demo's ConvNet, views capped at 64 px;
- ``gpu``: one GPU: ViT-S/16 at 224 px, the paper's DINO-2 head, 64 images, bf16 or fp16;
- ``node``: one node of 8 GPUs: the paper's Table 2 ViT-S/16 recipe scaled from 16 GPUs.

Without ``--preset`` and ``--config`` the run picks one (:func:`choose_preset`) and says which.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

DEFAULT_CONFIG = "demo.yaml"
#: name -> what it is for, in the order ``--preset`` lists them.
PRESETS = {
    "demo": "the MNIST demo on 2 CPU cores",
    "cpu": "your images on a laptop's CPU (views capped at 64 px)",
    "gpu": "one GPU: ViT-S/16 at 224 px",
    "node": "one node of 8 GPUs: the paper's Table 2 recipe",
}
#: GPUs from which the ``node`` preset is picked.
NODE_GPUS = 8


def preset_path(name: str) -> Path:
    """The YAML of preset ``name``.

    Raises:
        ValueError: an unknown name, naming the presets.
    """
    if name not in PRESETS:
        raise ValueError(f"--preset: unknown {name!r}; choose one of {list(PRESETS)}")
    return Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))


def default_config_path() -> Path:
    """The embedded default run: DINO-2 + AdaSim on MNIST, sized for 2 CPU cores."""
    return preset_path("demo")


def choose_preset(data: str | None, use_gpu: bool, gpus: int) -> tuple[str, str]:
    """(preset, why) for a run given no ``--preset`` and no ``--config``: ``demo`` for the
    data sets built into the package (the demo's MNIST, the tests' digits; or none named),
    else ``node`` with 8 or more GPUs, ``gpu`` when ``ray.use_gpu`` is set or there are GPUs,
    else ``cpu``.

    Examples:
        >>> choose_preset(None, False, 0)[0], choose_preset("folder:/x", False, 0)[0]
        ('demo', 'cpu')
        >>> choose_preset("folder:/x", True, 0)[0], choose_preset("folder:/x", False, 8)[0]
        ('gpu', 'node')
    """
    if data is None or data in BUILTIN_DATA:
        return "demo", "a data set built into the package"
    if gpus >= NODE_GPUS:
        return "node", f"{gpus} GPUs"
    if use_gpu or gpus > 0:
        return "gpu", (f"{gpus} GPU(s)" if gpus else "ray.use_gpu is set")
    return "cpu", "no GPU"


# The demo's fields sized for its own data set (3,000 MNIST digits, 28 px crops that keep a
# digit's identity): on another data set they fall back to the defaults, so that the user's
# data is trained and evaluated whole, with the paper's crops, unless the user says otherwise.
DEMO_DATA = "mnist"
#: The data sets the package ships, on which a run without --preset takes the demo's recipe.
BUILTIN_DATA = ("mnist", "digits")
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
