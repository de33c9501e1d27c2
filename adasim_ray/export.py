"""A pretrained backbone as a self-contained directory: ``backbone.safetensors`` (the weights,
no pickle) and ``config.json`` (what rebuilds the module and how to feed it), and
:func:`load_backbone`, which rebuilds it. Plain PyTorch; ``adasim-ray export`` writes it from a
run's newest checkpoint.

``config.json`` keys: ``backbone`` (a timm model name or a CPU preset of
:mod:`adasim_ray.backbones`), ``kwargs`` (the arguments of ``build_backbone`` besides the name:
``image_size``, ``in_chans``), ``image_size``, ``in_chans``, ``mean`` and ``std`` (per-channel
normalisation of [0, 1] pixels, as in training), ``feat_dim``, ``run_name``, ``epoch``, and
``which`` (``teacher`` or ``student``).

For a plain timm name the weights are timm's own layout, so timm loads them too (where
``build_backbone`` adds nothing of its own: no small stem, i.e. ResNets above 64 px)::

    timm.create_model(name, num_classes=0, pretrained=True,
                      pretrained_cfg_overlay=dict(file=".../backbone.safetensors"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adasim_ray.backbones import build_backbone
from adasim_ray.errors import UserError

WEIGHTS = "backbone.safetensors"
CONFIG_JSON = "config.json"
def backbone_of(model: nn.Module, which: str) -> nn.Module:
    """The backbone of role ``which`` (``teacher``, the one evaluated, or ``student``) of a
    method, as the method declares them (``encoders()``; a method with one backbone gives it
    for both).

    Raises:
        UserError: a role the method does not have, naming those it has.
    """
    try:
        return model.encoder(which)
    except ValueError as err:
        raise UserError(f"--which: {err}") from None


def write_export(backbone: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``backbone``'s weights and ``meta`` (the ``config.json`` keys) to ``out_dir``."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    # contiguous copies: safetensors refuses views and shared storage (a ViT's tied tensors)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in
             backbone.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_backbone(directory: str | Path, map_location: str | torch.device = "cpu"
                  ) -> nn.Module:
    """The backbone exported to ``directory`` by ``adasim-ray export``, rebuilt and loaded
    (strictly: every weight present, none left over), in eval mode.

    Examples:
        >>> backbone = load_backbone("exports/mnist-dino")  # doctest: +SKIP
        >>> backbone(torch.zeros(1, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([1, 128])
    """
    path = Path(directory).expanduser()
    if not (path / CONFIG_JSON).is_file() or not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: not an exported backbone (expected {CONFIG_JSON} and {WEIGHTS})")
    meta = json.loads((path / CONFIG_JSON).read_text())
    backbone, _ = build_backbone(meta["backbone"], **meta["kwargs"])
    backbone.load_state_dict(load_file(str(path / WEIGHTS), device=str(map_location)))
    return backbone.to(map_location).eval()
