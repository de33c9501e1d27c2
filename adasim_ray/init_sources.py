"""Where the ``init`` weights come from (:class:`adasim_ray.init_weights.InitSection`): each
kind of ``init.backbone`` read to a backbone's state dict, weights only.

- a state dict file: ``.safetensors``, or ``.pt`` / ``.pth`` unpickled with
  ``weights_only=True`` (nothing in it runs code); a local path or an object storage URI,
  read through a temporary local copy;
- an ``adasim-ray export`` folder: its ``backbone.safetensors``;
- a run directory (local or a URI): the backbone of role ``init.which`` in its newest
  complete checkpoint. The run's own method is built from its ``config.yaml`` on the meta
  device (no memory, no initialisation) to find that backbone's name in the method's state
  dict (``model.encoder(which)`` among ``model.named_modules()``), so any registered method
  works; the run's data is never opened;
- ``timm:NAME.TAG``: timm's pretrained weights from the local Hugging Face cache
  (``HF_HUB_CACHE``, else ``HF_HOME/hub``) or torch hub cache (``TORCH_HOME``), never the
  network; timm's own loader then applies the model's checkpoint filter and drops the
  classifier, at the model's native size (the loading resamples a ViT's position embeddings).

Every failure is a one-line ConfigError that starts with ``init.backbone``: the pre-flight
(:func:`check_init`) reports it before any Ray work, and a Train worker raises it the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
import torch
from torch import nn

from adasim_ray.config import config_from_dict
from adasim_ray.configfile import read_yaml
from adasim_ray.errors import AdasimError, ConfigError, first_line
from adasim_ray.export import CONFIG_JSON, WEIGHTS
from adasim_ray.init_weights import (
    TIMM_PREFIX,
    InitMatch,
    InitSection,
    InitWeights,
    init_kind,
    match_weights,
    unknown_format,
)
from adasim_ray.recipe import build_model
from adasim_ray.resources.store import download
from adasim_ray.rundir.checkpoint import latest_checkpoint, read_checkpoint
from adasim_ray.rundir.layout import CONFIG, file_type, is_run_dir, join, read_text, split

__all__ = ["check_init", "read_init"]


def read_init(section: InitSection) -> InitWeights | None:
    """The weights ``section`` names, read (None when ``backbone`` is unset).

    Raises:
        ConfigError: one line starting with ``init.backbone`` (not found, unreadable, not a
            state dict, a run without a complete checkpoint, a timm tag not in the cache).
    """
    if section.backbone is None:
        return None
    text = section.backbone
    try:
        kind = init_kind(text)
        if kind == "timm":
            return _read_timm(text[len(TIMM_PREFIX):].strip())
        where = text if "://" in text else str(Path(text).expanduser().resolve())
        found = file_type(where)
        if found == pafs.FileType.NotFound:
            raise ConfigError(f"init.backbone: {text} not found")
        if kind == "file" and found == pafs.FileType.File:
            return InitWeights(_read_state_file(where, text), text)
        if found == pafs.FileType.File:
            raise unknown_format(text)
        if kind == "file":
            raise ConfigError(f"init.backbone: {text} is a directory, not a state dict file")
        if file_type(join(where, WEIGHTS)) == pafs.FileType.File:
            return _read_export(where, text)
        if is_run_dir(where):
            return _read_run(where, text, section.which)
        raise ConfigError(f"init.backbone: {text} is neither an adasim-ray export folder "
                          f"({WEIGHTS} + {CONFIG_JSON}) nor a run directory ({CONFIG})")
    except ConfigError as err:
        if str(err).startswith("init."):
            raise
        raise ConfigError(f"init.backbone: {first_line(err)}") from None
    except AdasimError as err:  # a checkpoint that does not load, storage that cannot be read
        raise ConfigError(f"init.backbone: {first_line(err)}") from None


def check_init(section: InitSection, backbone: nn.Module) -> InitMatch | None:
    """The pre-flight's check: the source reads and its tensors meet ``backbone``'s (strictly
    unless ``init.strict`` is false); nothing is loaded. None when ``backbone`` is unset.

    Raises:
        ConfigError: one line starting with ``init.backbone``.
    """
    weights = read_init(section)
    return None if weights is None else match_weights(backbone, weights, section.strict)


@contextlib.contextmanager
def _local(uri: str) -> Iterator[Path]:
    """A local path of the file ``uri`` (itself, or a temporary copy of an object)."""
    if "://" not in uri:
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="adasim-init-") as tmp:
        local = Path(tmp, split(uri)[1])
        try:
            download(uri, local)
        except OSError as err:
            raise ConfigError(f"init.backbone: cannot read {uri} ({first_line(err)})") from None
        yield local


def _read_state_file(uri: str, shown: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file, or a ``torch.save``d dict of tensors unpickled weights-only."""
    with _local(uri) as path:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state: Any = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ConfigError(f"init.backbone: {shown}: refused to load: it holds more than "
                              "tensors and numbers (a pickle that would run code)") from None
        except Exception as err:  # noqa: BLE001 - safetensors, torch: each their own errors
            raise ConfigError(f"init.backbone: {shown} does not load "
                              f"({' '.join(str(err).split())[:200]})") from None
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        entries = list(state)[:6] if isinstance(state, Mapping) else type(state).__name__
        raise ConfigError(f"init.backbone: {shown} is not a state dict of tensors (it holds "
                          f"{entries}); save backbone.state_dict()")
    return dict(state)


def _read_export(where: str, shown: str) -> InitWeights:
    text = read_text(join(where, CONFIG_JSON))
    meta = json.loads(text) if text else {}
    about = ", ".join(str(v) for v in (meta.get("backbone"), meta.get("which"),
                                      meta.get("run_name")) if v)
    tensors = _read_state_file(join(where, WEIGHTS), f"{shown}/{WEIGHTS}")
    return InitWeights(tensors, f"{shown} (an export{': ' + about if about else ''})")


@dataclass(frozen=True)
class _Shape:
    """What :func:`adasim_ray.recipe.build_model` reads of the views: their size and
    channels (on the meta device only the names count, not the shapes)."""

    size: int
    channels: int


def _read_run(run_dir: str, shown: str, which: str) -> InitWeights:
    """The backbone ``which`` of the run's newest complete checkpoint, by its name in the
    run's own method (built on the meta device from its ``config.yaml``)."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"init.backbone: run {shown} has no complete checkpoint yet")
    try:
        cfg = config_from_dict(read_yaml(join(run_dir, CONFIG)))
    except ConfigError as err:
        raise ConfigError(f"init.backbone: {join(shown, CONFIG)}: {first_line(err)}") from None
    meta, state, _ = read_checkpoint(checkpoint, shards=False)
    prefix = _backbone_prefix(cfg, int(meta["settings"]["num_images"]), which)
    tensors = {name[len(prefix):]: t for name, t in state["model"].items()
               if name.startswith(prefix)}
    return InitWeights(tensors, f"the {which} backbone of run {shown} (epoch {meta['epoch']}, "
                                f"{cfg.backbone})")


def _backbone_prefix(cfg: Any, num_images: int, which: str) -> str:
    """``teacher.backbone.`` (DINO, BYOL) or ``backbone.`` (SimSiam): where the backbone of
    role ``which`` sits in the state dict of ``cfg``'s method."""
    shape = _Shape(cfg.augment.image_size or 224, 3)
    with torch.random.fork_rng(devices=[]):  # build_model seeds; the caller's RNG is left be
        try:
            with torch.device("meta"):
                model = build_model(cfg, shape, num_images)  # type: ignore[arg-type]
        except (NotImplementedError, RuntimeError):  # an op the meta device lacks
            model = build_model(cfg, shape, num_images)  # type: ignore[arg-type]
    try:
        encoder = model.encoder(which)
    except ValueError as err:
        raise ConfigError(f"init.which: {err}") from None
    name = next(n for n, m in model.named_modules() if m is encoder)
    return f"{name}." if name else ""


def _hf_cache() -> str:
    """The Hugging Face hub cache as the environment names it now (the library reads it once,
    at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _read_timm(tag: str) -> InitWeights:
    """timm's pretrained weights of ``tag`` from the local caches only, through timm's loader
    (its checkpoint filter, the classifier dropped), as the model's state dict."""
    import timm
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(tag)
    if pretrained is None:
        arch = tag.partition(".")[0]
        raise ConfigError(f"init.backbone: timm:{tag} is not a pretrained tag of timm "
                          f"{timm.__version__} (timm.list_pretrained('{arch}*') lists them)")
    full = f"{pretrained.architecture}.{pretrained.tag}" if pretrained.tag else tag
    looked = []
    overlay: dict[str, Any] | None = None
    if pretrained.hf_hub_id:
        from huggingface_hub import hf_hub_download

        repo, _, revision = pretrained.hf_hub_id.partition("@")
        cache = _hf_cache()
        names = ([pretrained.hf_hub_filename] if pretrained.hf_hub_filename
                 else ["model.safetensors", "pytorch_model.bin"])
        for name in names:
            try:
                path = hf_hub_download(repo, name, revision=revision or None, cache_dir=cache,
                                       local_files_only=True)
            except (OSError, ValueError):
                continue
            overlay = {"state_dict": _read_state_file(path, f"timm:{full} ({path})")}
            break
        else:
            looked.append(f"{repo} in the Hugging Face cache {cache}")
    if overlay is None and pretrained.url:
        path = Path(torch.hub.get_dir(), "checkpoints", Path(urlparse(pretrained.url).path).name)
        if path.is_file() and pretrained.custom_load:  # timm's own reader (.npz: no pickle)
            overlay = {"file": str(path), "custom_load": True}
        elif path.is_file():
            overlay = {"state_dict": _read_state_file(str(path), f"timm:{full}")}
        else:
            looked.append(f"{path.name} in the torch hub cache {path.parent}")
    if overlay is None:
        raise ConfigError(
            f"init.backbone: timm:{full} is not in the local cache (looked for "
            f"{' and for '.join(looked) or 'a weight file: timm names none'}); a run never "
            "downloads: fill the cache where there is internet access with python -c "
            f"\"import timm; timm.create_model('{full}', pretrained=True)\" under the same "
            "HF_HOME / TORCH_HOME")
    try:
        model = timm.create_model(full, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=overlay)
    except (RuntimeError, ValueError, OSError) as err:
        raise ConfigError(f"init.backbone: timm:{full} does not load from the cache "
                          f"({' '.join(str(err).split())[:200]})") from None
    return InitWeights(dict(model.state_dict()), f"timm:{full}")
