"""Starting a backbone from existing weights (continued pretraining on one's own images): the
``init`` section of the config, and loading a state dict into a backbone, its keys matched
strictly or not, a ViT's absolute position embeddings resampled when the image size differs
(bicubic, as DINO's ``interpolate_pos_encoding`` and timm's checkpoint loader do).

Plain PyTorch. Where the weights come from (a state dict file, an ``adasim-ray export``
folder, a run's checkpoint, a timm pretrained tag) is read by :mod:`adasim_ray.init_sources`;
:func:`adasim_ray.recipe.build_model` loads them into the backbone *before* the method is
built, so that the student and the teacher (a copy of the student) both start from them.

All weight loading goes through here: ``backbone_kwargs`` refuses timm's own weight-loading
arguments (:func:`refuse_weight_kwargs`).

Examples:
    >>> from adasim_ray.backbones import build_backbone
    >>> source, _ = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    >>> target, _ = build_backbone("vit_tiny_cpu", image_size=56, in_chans=1)
    >>> found = load_weights(target, InitWeights(source.state_dict(), "a 28 px run"))
    >>> found.resampled, len(found.loaded) == len(target.state_dict())
    (['pos_embed'], True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from adasim_ray.errors import ConfigError

__all__ = ["FILE_SUFFIXES", "TIMM_PREFIX", "WEIGHT_LOADING_KWARGS", "InitMatch", "InitSection",
           "InitWeights", "init_kind", "load_weights", "match_weights", "refuse_weight_kwargs",
           "unknown_format"]

#: State dict files ``init.backbone`` takes: safetensors, or a ``torch.save``d dict of tensors.
FILE_SUFFIXES = (".safetensors", ".pt", ".pth")
#: ``init.backbone: timm:NAME.TAG`` names a timm pretrained tag.
TIMM_PREFIX = "timm:"
#: timm's arguments that load weights when a model is built; refused in ``backbone_kwargs``.
WEIGHT_LOADING_KWARGS = ("checkpoint_path", "pretrained", "pretrained_cfg",
                         "pretrained_cfg_overlay", "pretrained_strict")
#: Files of other formats, refused by their names before any is opened (a file with none of
#: these suffixes and none of ``FILE_SUFFIXES`` is refused once it is found to be a file).
_OTHER_FORMATS = (".bin", ".ckpt", ".npz", ".npy", ".h5", ".pkl", ".pickle", ".onnx", ".msgpack",
                  ".tar", ".zip", ".gz", ".json", ".yaml", ".yml", ".txt")
#: Names shown of each kind of unmatched tensor before "and N more".
_SHOWN = 12


@dataclass(frozen=True)
class InitSection:
    """Weights the backbone starts from instead of a random initialisation; the heads start
    random as before. The pre-flight checks the source (it reads, its tensors match); each
    Train worker reads it as it starts (a resume then loads its checkpoint over it). Weights
    only: the source's data is never opened.

    Attributes:
        backbone: None = random init. Else one of: a state dict file (``.safetensors``,
            ``.pt`` or ``.pth``; a local path or an ``s3://`` ``gs://`` URI) whose names are
            the backbone's (``backbone.state_dict()``); an ``adasim-ray export`` folder
            (``backbone.safetensors`` + ``config.json``); a run directory, local or a URI:
            the backbone of its newest complete checkpoint (role ``which``); or
            ``timm:NAME.TAG`` (e.g. ``timm:vit_small_patch16_224.dino``), timm's pretrained
            weights, read from the local Hugging Face / torch hub cache only (nothing is
            downloaded; fill the cache beforehand, see the README).
        which: the backbone of a run directory to start from: ``teacher`` (the one evaluated
            and exported by default) or ``student``.
        strict: every tensor of the backbone must be in the source with its shape (a ViT's
            position embeddings resampled to the image size count), and nothing left over;
            else the run stops at its pre-flight naming what differs. ``false`` loads the
            tensors that match and lists the rest.
    """

    backbone: str | None = None
    which: Literal["teacher", "student"] = "teacher"
    strict: bool = True

    def validate(self) -> None:
        """The form of ``backbone`` (:func:`init_kind`); whether it exists is the
        pre-flight's to find out."""
        if self.backbone is not None:
            init_kind(self.backbone)


def init_kind(backbone: str) -> Literal["timm", "file", "folder"]:
    """What ``init.backbone`` names by its form: a timm tag, a state dict file, or a folder
    (an export or a run directory, told apart by their files).

    Raises:
        ConfigError: an empty name, or a file of another format, in one line.

    Examples:
        >>> init_kind("timm:vit_small_patch16_224.dino"), init_kind("s3://bucket/runs/r1")
        ('timm', 'folder')
        >>> init_kind("weights.ckpt")
        Traceback (most recent call last):
        ...
        adasim_ray.errors.ConfigError: init.backbone: 'weights.ckpt' is of an unknown format; \
expected a .safetensors, .pt or .pth state dict file, an adasim-ray export folder, a run \
directory or timm:NAME.TAG
    """
    if backbone.startswith(TIMM_PREFIX):
        if not backbone[len(TIMM_PREFIX):].strip():
            raise ConfigError("init.backbone: timm: needs a pretrained tag, e.g. "
                              "timm:vit_small_patch16_224.dino")
        return "timm"
    name = backbone.rstrip("/").rpartition("/")[2]
    if name.endswith(FILE_SUFFIXES):
        return "file"
    if not name or name.lower().endswith(_OTHER_FORMATS):
        raise unknown_format(backbone)
    return "folder"


def unknown_format(backbone: str) -> ConfigError:
    """The one-line error of a source that is none of the four kinds (a file of another
    format is found out by its name here, or on the disk when it has no known suffix)."""
    return ConfigError(
        f"init.backbone: {backbone!r} is of an unknown format; expected a "
        f"{', '.join(FILE_SUFFIXES[:-1])} or {FILE_SUFFIXES[-1]} state dict file, an "
        "adasim-ray export folder, a run directory or timm:NAME.TAG")


def refuse_weight_kwargs(kwargs: Mapping[str, Any]) -> None:
    """``backbone_kwargs`` may not load weights through timm: all weight loading goes through
    the ``init`` section (strict keys, weights-only files, the local cache only).

    Raises:
        ConfigError: naming the first such argument, in one line.
    """
    found = [k for k in WEIGHT_LOADING_KWARGS if k in kwargs]
    if found:
        raise ConfigError(
            f"backbone_kwargs: {found[0]} loads weights through timm; start from weights with "
            "the init section instead (init.backbone: a .safetensors or .pt file, an export "
            "folder, a run directory or timm:NAME.TAG)")


@dataclass(frozen=True)
class InitWeights:
    """A backbone's state dict read from an ``init`` source, not yet loaded.

    Attributes:
        tensors: name -> tensor, named as the backbone's ``state_dict()``.
        source: what they were read from, as the run's line says it.
    """

    tensors: dict[str, torch.Tensor]
    source: str


@dataclass
class InitMatch:
    """How a source's tensors meet a backbone's.

    Attributes:
        source: the source, as :class:`InitWeights` names it.
        loaded: what loads (resampled where needed), by name.
        missing: the backbone's names the source lacks.
        unexpected: the source's names the backbone lacks.
        mismatched: ``name (source shape vs backbone shape)`` of the names in both whose
            shapes differ (and cannot be resampled).
        resampled: the position embeddings resampled to the backbone's patch grid.
    """

    source: str
    loaded: dict[str, torch.Tensor] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every tensor of the backbone loads and none of the source is left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def rest(self) -> str:
        """What does not load, by kind, the first names of each: ``3 missing (a, b, c); ...``."""
        parts = []
        for kind, names in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("of another shape", self.mismatched)):
            if names:
                shown = ", ".join(names[:_SHOWN])
                more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
                parts.append(f"{len(names)} {kind} ({shown}{more})")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """What a run prints: the count loaded, then, when not complete, the rest."""
        resampled = (f" ({', '.join(self.resampled)} resampled to the image size)"
                     if self.resampled else "")
        out = [f"[adasim] init: loaded {len(self.loaded)} tensors from {self.source}{resampled}"]
        if not self.complete:
            out.append(f"[adasim] init: not loaded (init.strict is false): {self.rest()}")
        return out


def match_weights(backbone: nn.Module, weights: InitWeights, strict: bool = False
                  ) -> InitMatch:
    """Meet ``weights`` with ``backbone``'s state dict by name and shape, resampling a ViT's
    position embeddings to its patch grid; loads nothing (the pre-flight's check).

    Raises:
        ConfigError: ``strict`` and the source does not match the backbone: one line naming
            what is missing, left over or of another shape.
    """
    found = InitMatch(weights.source)
    target = backbone.state_dict()
    for name, want in target.items():
        have = weights.tensors.get(name)
        if have is None:
            found.missing.append(name)
        elif tuple(have.shape) == tuple(want.shape):
            found.loaded[name] = have
        else:
            resampled = _resample_pos_embed(backbone, name, have, tuple(want.shape))
            if resampled is None:
                found.mismatched.append(f"{name} ({_shape(have)} vs {_shape(want)})")
            else:
                found.loaded[name] = resampled
                found.resampled.append(name)
    found.unexpected = [name for name in weights.tensors if name not in target]
    if strict and not found.complete:
        raise ConfigError(f"init.backbone: {weights.source} does not match the backbone: "
                          f"{found.rest()}; set init.strict=false to load what matches")
    return found


def load_weights(backbone: nn.Module, weights: InitWeights, strict: bool = True) -> InitMatch:
    """Copy ``weights`` into ``backbone`` (in place; on the meta device nothing is copied);
    strictly: all or nothing.

    Raises:
        ConfigError: as :func:`match_weights`.
    """
    found = match_weights(backbone, weights, strict)
    if any(t.is_meta for t in backbone.state_dict().values()):
        return found  # a meta model (the pre-flight's) has nothing to copy into
    with torch.no_grad():
        backbone.load_state_dict(found.loaded, strict=False)
    return found


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _resample_pos_embed(backbone: nn.Module, name: str, have: torch.Tensor,
                        want: tuple[int, ...]) -> torch.Tensor | None:
    """``have`` (1, prefix + h * w, D) resampled to the patch grid of the ViT that owns
    ``name`` (a ``pos_embed`` of a timm ``VisionTransformer``); None where it is not one, or
    the source's grid is not square."""
    owner_name, _, leaf = name.rpartition(".")
    if leaf != "pos_embed" or have.dim() != 3 or len(want) != 3:
        return None
    if have.shape[0] != want[0] or have.shape[2] != want[2]:
        return None
    owner = backbone.get_submodule(owner_name)
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    if grid is None:
        return None
    prefix = 0 if getattr(owner, "no_embed_class", False) else \
        int(getattr(owner, "num_prefix_tokens", 1))
    side = math.isqrt(have.shape[1] - prefix)
    if side * side != have.shape[1] - prefix or prefix + math.prod(grid) != want[1]:
        return None
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(have, new_size=list(grid), old_size=[side, side],
                                  num_prefix_tokens=prefix, verbose=False)
