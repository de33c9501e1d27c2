"""The pre-flight of a run: what can be judged of a config and its data before any Ray work,
returned as findings. ``adasim-ray check`` prints them all; ``pretrain`` raises the first
(``Preflight.raise_first``), in one line, before it writes anything.

In order: the training data opens (its size N); the config holds against N and the labels;
the evaluation splits open and carry the labels the k-NN needs (unlabelled training data
without ``eval_data`` has no k-NN: ``no_eval`` says so, no finding); the views and the backbone
(its feature dimension d, the cache's width) build; the ``init`` weights, if any, read and
match that backbone (nothing is loaded); the tracker asked for (``tracking``) is installed
and knows its store; the method builds on the meta device (no
memory, no initialisation), so that a setting it refuses (a warm-up longer than the run, say)
is a finding rather than a Train worker's error retried ``ray.max_failures`` times, and its
checkpoint size is known (``state_bytes``).

Examples:
    >>> from adasim_ray.config import load_config
    >>> found = preflight(load_config(None, ["data=digits", "epochs=1", "dino.warmup_epochs=3"]))
    >>> [f.message.split(":")[0] for f in found.findings]
    ['dino']
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from adasim_ray.augmentations import GlobalViews
from adasim_ray.config import PretrainConfig, validate
from adasim_ray.data import ImageSource
from adasim_ray.errors import AdasimError, ConfigError, DataError, first_line
from adasim_ray.init_sources import check_init
from adasim_ray.recipe import (
    build_backbone_for,
    build_model,
    evaluates,
    make_views,
    open_eval_source,
    open_train_source,
)

__all__ = ["EVAL_ROLES", "Finding", "Preflight", "check_tracking", "preflight",
           "recipe_line"]

#: The evaluation splits and their roles in the k-NN.
EVAL_ROLES = {"train": "k-NN memory", "test": "k-NN queries"}


@dataclass(frozen=True)
class Finding:
    """One problem, in one line that starts with the field or the topic it is about;
    ``kind`` is the error a run raises for it."""

    message: str
    kind: type[AdasimError] = ConfigError


@dataclass
class Preflight:
    """The findings, and what the checks built on the way (None where they could not)."""

    findings: list[Finding] = field(default_factory=list)
    source: Any = None  # the training ImageSource, or a planned stand-in of its size
    eval_sources: dict[str, ImageSource] = field(default_factory=dict)
    views: GlobalViews | None = None
    feat_dim: int | None = None
    state_bytes: int | None = None  # None: the meta device could not build the method
    no_eval: str | None = None  # why the run has no k-NN to run (unlabelled data), or None

    @property
    def evaluates(self) -> bool:
        return self.no_eval is None

    @property
    def num_images(self) -> int | None:
        return None if self.source is None else len(self.source)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, message: str, kind: type[AdasimError] = ConfigError) -> None:
        self.findings.append(Finding(message, kind))

    def raise_first(self) -> None:
        """Raise the first finding as its kind of one-line error."""
        if self.findings:
            first = self.findings[0]
            raise first.kind(first.message)


def preflight(cfg: PretrainConfig, *, source: Any = None, world: int | None = None
              ) -> Preflight:
    """Every check of the module docstring, each finding kept.

    Args:
        cfg: a loaded config (its fields each valid on their own).
        source: the training images if already known, or a stand-in with ``len``,
            ``channels``, ``mean``, ``std`` (``check --num-images``: nothing is opened,
            the evaluation splits are not checked); None opens ``cfg.data``.
        world: the Train workers the schedules are split over (default
            ``ray.num_workers``, at least 1).
    """
    found = Preflight()
    planned = source is not None and not isinstance(source, ImageSource)
    if source is None:
        try:
            source = open_train_source(cfg)
        except DataError as err:
            found.add(f"data: {first_line(err)}", DataError)
    found.source = source
    labelled = None if source is None or planned else source.labels is not None
    try:
        validate(cfg, found.num_images, labelled=labelled)
    except ConfigError as err:
        found.add(first_line(err))
    if not planned and source is not None and not evaluates(cfg, source):
        found.no_eval = (f"k-NN skipped: {source.name} is unlabelled and there is no "
                         "eval_data (set eval_data to a labelled data set to run it)")
    elif not planned and (source is not None or cfg.eval_data is not None):
        _check_eval(cfg, found)
    tracking = check_tracking(cfg)
    if tracking is not None:
        found.add(tracking)
    if source is None:
        return found
    found.views = make_views(cfg, source)
    try:
        backbone, found.feat_dim = build_backbone_for(cfg, found.views)
    except ConfigError as err:
        found.add(first_line(err))
        return found
    try:  # the init weights read and match the backbone (loaded by the Train workers)
        check_init(cfg.init, backbone)
    except ConfigError as err:
        if first_line(err) not in {f.message for f in found.findings}:  # validate's, once
            found.add(first_line(err))
    found.state_bytes = _method_state_bytes(cfg, found, world)
    if found.state_bytes is None:  # not sized on the meta device: the backbone, 4 copies
        found.state_bytes = 4 * 4 * sum(p.numel() for p in backbone.parameters())
    return found


def check_tracking(cfg: PretrainConfig) -> str | None:
    """The one line of a tracker that cannot start: its extra not installed (rank 0 would
    fail to import it, retried ``ray.max_failures`` times), or MLflow without a store.

    Examples:
        >>> from adasim_ray.config import load_config
        >>> check_tracking(load_config(None, ["tracking=none"])) is None
        True
    """
    if cfg.tracking == "none":
        return None
    if importlib.util.find_spec(cfg.tracking) is None:
        return (f"tracking: {cfg.tracking} is not installed: "
                f"pip install 'adasim-ray[{cfg.tracking}]'")
    if cfg.tracking == "mlflow" and not (cfg.tracking_uri or os.environ.get(
            "MLFLOW_TRACKING_URI")):
        return ("tracking_uri: tracking: mlflow needs the tracking server or store (e.g. "
                "http://HOST:5000 or sqlite:////ABS/PATH/mlflow.db), or MLFLOW_TRACKING_URI")
    return None


def _check_eval(cfg: PretrainConfig, found: Preflight) -> None:
    """Each evaluation split opens and carries labels (the k-NN votes with them)."""
    for split, role in EVAL_ROLES.items():
        try:
            sample = open_eval_source(cfg, split)
        except DataError as err:
            found.add(f"eval data ({split} split): {first_line(err)}", DataError)
            continue
        found.eval_sources[split] = sample
        if sample.labels is None:
            found.add(f"eval_data: {sample.name} has no labels, and the k-NN evaluation "
                      f"({role}) needs them; set eval_data to a labelled data set (e.g. "
                      "class folders)")


def _method_state_bytes(cfg: PretrainConfig, found: Preflight,
                        world: int | None) -> int | None:
    """The method built on the meta device: a setting it refuses is a finding; returns the
    checkpoint size it declares, None where the meta device lacks an op it needs."""
    assert found.views is not None and found.num_images is not None
    workers = world if world is not None else max(cfg.ray.num_workers, 1)
    try:
        with torch.device("meta"):
            method = build_model(cfg, found.views, found.num_images, workers)
    except ValueError as err:
        found.add(f"{cfg.method}: {first_line(err)}")
        return None
    except (NotImplementedError, RuntimeError):
        return None  # an op the meta device lacks: the Train workers build it for real
    return int(method.state_bytes())


def recipe_line(cfg: PretrainConfig, found: Preflight) -> str:
    """One line on what the run trains: method and mode, backbone and view size (and why
    that size), epochs, the batch per worker and in all, the workers and their GPUs.

    Examples:
        >>> from adasim_ray.config import load_config
        >>> cfg = load_config(None, ["data=digits", "epochs=2", "dino.warmup_epochs=1"])
        >>> recipe_line(cfg, preflight(cfg)).split(", 2 epochs")[0]
        "dino + adasim on vit_tiny_cpu, views of 8 px (the images' own size)"
    """
    assert found.views is not None and found.source is not None
    workers = max(cfg.ray.num_workers, 1)
    native = found.source.native_size
    size = found.views.size
    if cfg.augment.image_size is not None:
        why = "augment.image_size"
    elif native is not None and size == native:
        why = "the images' own size"
    elif cfg.augment.max_image_size is not None and size == cfg.augment.max_image_size:
        why = (f"the images' {native} px" if native else "images of mixed sizes") \
            + " capped by augment.max_image_size"
    else:
        why = "images of mixed sizes"
    gpus = (f", {workers * cfg.ray.gpus_per_worker:g} GPU(s)" if cfg.ray.use_gpu
            else ", no GPU")
    return (f"{cfg.method} + {cfg.adasim.mode} on {cfg.backbone}, views of {size} px ({why}), "
            f"{cfg.epochs} epochs, batch {cfg.batch_size // workers} per worker "
            f"({cfg.batch_size} in all), {workers} worker(s){gpus}")
