"""The pretraining configuration: one typed object, loaded from YAML, validated before any Ray work.

Field names are an interface (sweeps and scripts address them with ``--set adasim.tau=0.3``):
``data``, ``eval_data``, ``method``, ``backbone``, ``epochs``, ``batch_size``, ``seed``,
``checkpoint_every``, ``adasim.mode``, ``adasim.tau``, ``adasim.window``, ``adasim.topk``,
``ray.num_workers``, ``ray.cache_shards`` and the rest documented on each section below.

Examples:
    >>> cfg = load_config(None, ["adasim.tau=0.3", "epochs=2"])
    >>> cfg.adasim.tau, cfg.epochs
    (0.3, 2)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adasim_ray.configfile import (
    ConfigError,
    from_dict,
    parse_override,
    read_yaml,
    set_dotted,
    to_dict,
)
from adasim_ray.methods.dino import DINOConfig
from adasim_ray.methods.simsiam import SimSiamConfig

__all__ = ["ConfigError", "PretrainConfig", "load_config", "validate", "dump_config"]


@dataclass(frozen=True)
class AdaSimSection:
    """Bootstrapping (the paper's Section 3.3; the ablation of Table 4).

    Attributes:
        mode: ``none`` (plain baseline), ``nn`` (+ NN: top-1 neighbour, never self),
            ``adasim`` (adaptive sampling from the windowed similarity) or ``oracle`` (the
            supervised oracle of Section 4.4 / Table 1: a random image of the same class;
            needs a labelled data set).
        tau: temperature of Eq. 9 (0 = the plain baseline exactly). Paper: 0.2.
        window: w, epochs averaged by Eq. 8; bootstrapping starts after w epochs. Paper: 10
            (ablation), 50 (long runs), 1 (the 100-epoch runs of Table 2).
        topk: K, support size per epoch (Section 3.4). Paper: 3 (ablation), 10 (Table 2).
        cache_dtype: storage of the cache Z (float16 halves its memory; queries compute in
            float32 on CPUs).
        sim_dtype: storage of the window's similarities.
        oracle_p: ``oracle`` only: probability of a standard pair (j* = i) at the last epoch;
            it falls linearly from 1 at the first epoch. In [0, 1]; Table 1: 0 and 0.5 (0.5
            is better: standard pairs still help).
    """

    mode: Literal["none", "nn", "adasim", "oracle"] = "adasim"
    tau: float = 0.2
    window: int = 10
    topk: int = 3
    cache_dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    sim_dtype: Literal["float16", "float32"] = "float16"
    oracle_p: float = 0.0


@dataclass(frozen=True)
class AugmentSection:
    """The two global views (DINO's, with the AdaSim paper's crop scale).

    Attributes:
        image_size: side of the crops; None = the data set's native size (28 for MNIST, 8 for
            digits) or 224 for folders and Parquet.
        crop_scale: RandomResizedCrop scale range; the paper uses (0.25, 1).
        flip: horizontal flips; None = off for digits and MNIST (a flip changes a digit), on
            otherwise.
    """

    image_size: int | None = None
    crop_scale: tuple[float, float] = (0.25, 1.0)
    flip: bool | None = None


@dataclass(frozen=True)
class EvalSection:
    """Online and final evaluation (DINO's k-NN protocol, linear probe, few-shot).

    Attributes:
        knn_every: run the k-NN evaluation every this many epochs (and at the end); 0 = only
            at the end.
        knn_k: neighbours voting (20).
        knn_temperature: vote weight exp(sim / T) (0.07).
        max_train: at most this many train images as the k-NN memory (None = all).
        max_test: at most this many test images (None = all).
        linear: run the linear probe at the end.
        fewshot: run the 5-way 5-shot evaluation at the end.
    """

    knn_every: int = 1
    knn_k: int = 20
    knn_temperature: float = 0.07
    max_train: int | None = None
    max_test: int | None = None
    linear: bool = True
    fewshot: bool = True


@dataclass(frozen=True)
class RaySection:
    """How the run is spread over Ray.

    Attributes:
        address: Ray cluster address; None = join a running cluster if RAY_ADDRESS is set or
            one is running here (``auto``), else start a local Ray.
        num_workers: Ray Train workers (DDP ranks). 0 runs the loop in the driver (tests).
        use_gpu: one GPU per worker (NCCL); else gloo on CPU.
        cpus_per_worker: CPUs reserved per Train worker.
        cache_shards: S, cache/window shard actors, each owning a contiguous id range.
        cache_shard_gpus: GPUs per shard actor (put Z on a GPU: queries in milliseconds).
        cache_shard_cpus: CPUs per shard actor.
        fetch_actors: concurrent Ray Data fetch tasks (load by index + augment) per rank.
        fetch_cpus: CPUs per fetch actor.
        max_failures: worker failures tolerated; each restarts from the last checkpoint.
        storage_path: where run directories live (a local path or s3:// gs:// URI);
            None = the ``--output`` directory.
    """

    address: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    cache_shards: int = 1
    cache_shard_gpus: float = 0.0
    cache_shard_cpus: float = 0.0
    fetch_actors: int = 2
    fetch_cpus: float = 0.0
    max_failures: int = 0
    storage_path: str | None = None


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run.

    Attributes:
        data: training data set: ``mnist``, ``digits``, ``folder:PATH`` or ``parquet:PATH``.
        eval_data: evaluation data set; None = the test split of ``data``.
        limit_images: train on the first this many images only (None = all); CPU-sized runs.
        method: ``dino`` (DINO with two global crops) or ``simsiam``.
        backbone: a timm model name (``resnet50``, ``vit_small_patch16_224``, ...) or a CPU
            preset of ``adasim_ray.backbones``.
        epochs: training epochs.
        batch_size: global batch (split over the workers).
        seed: seeds the model, the data order, the augmentations and the partner sampling.
        checkpoint_every: save a checkpoint every this many epochs (and at the end).
        skip_corrupt: skip (and count) unreadable images instead of failing.
        amp: bfloat16/float16 autocast on GPUs.
    """

    data: str = "mnist"
    eval_data: str | None = None
    limit_images: int | None = None
    method: Literal["dino", "simsiam"] = "dino"
    backbone: str = "vit_tiny_cpu"
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    checkpoint_every: int = 1
    skip_corrupt: bool = False
    amp: bool = False
    adasim: AdaSimSection = field(default_factory=AdaSimSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    dino: DINOConfig = field(default_factory=DINOConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    ray: RaySection = field(default_factory=RaySection)

    def replace(self, **changes: Any) -> PretrainConfig:
        return dataclasses.replace(self, **changes)


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> PretrainConfig:
    """Read a YAML config (None = the defaults), apply ``key=value`` overrides, validate.

    Raises:
        ConfigError: one line naming the field.
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(data, keys, value)
    return validate(config_from_dict(data))


def config_from_dict(data: dict[str, Any]) -> PretrainConfig:
    try:
        return from_dict(PretrainConfig, data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # a section's own checks (e.g. DINOConfig)
        raise ConfigError(
            str(err).replace("DINOConfig.", "dino.").replace("SimSiamConfig.", "simsiam.")
        ) from None


def _positive_int(value: int | None, name: str, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")


def validate(
    cfg: PretrainConfig, num_images: int | None = None, labelled: bool | None = None
) -> PretrainConfig:
    """Checks across fields; with ``num_images`` (N of the training set) also the N-bounded ones,
    with ``labelled`` (whether the training set has labels) the label-bound ones.

    Raises ConfigError naming the field and the allowed range.
    """
    import timm

    from adasim_ray.backbones import CPU_PRESETS
    from adasim_ray.data import DataError, parse_spec

    for name in ("data", "eval_data"):
        spec = getattr(cfg, name)
        if spec is not None:
            try:
                parse_spec(spec)
            except DataError as err:
                raise ConfigError(f"{name}: {err}") from None
    if cfg.backbone not in CPU_PRESETS and not timm.is_model(cfg.backbone):
        raise ConfigError(
            f"backbone: unknown {cfg.backbone!r}: not a CPU preset "
            f"({', '.join(CPU_PRESETS)}) and not a timm model name"
        )
    _positive_int(cfg.epochs, "epochs")
    _positive_int(cfg.batch_size, "batch_size")
    _positive_int(cfg.checkpoint_every, "checkpoint_every")
    _positive_int(cfg.limit_images, "limit_images")
    a = cfg.adasim
    if not a.tau >= 0 or a.tau != a.tau or a.tau == float("inf"):
        raise ConfigError(f"adasim.tau: must be a finite number >= 0, got {a.tau}")
    _positive_int(a.window, "adasim.window")
    _positive_int(a.topk, "adasim.topk")
    if not 0 <= a.oracle_p <= 1:
        raise ConfigError(f"adasim.oracle_p: must be a probability in [0, 1], got {a.oracle_p}")
    if labelled is False and a.mode == "oracle":
        raise ConfigError(
            f"adasim.mode: 'oracle' draws same-class partners, but the data set {cfg.data!r} "
            "has no labels; use a labelled data set or another mode"
        )
    lo, hi = cfg.augment.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"augment.crop_scale: need 0 < min <= max <= 1, got {(lo, hi)}")
    _positive_int(cfg.augment.image_size, "augment.image_size", 4)
    e = cfg.eval
    _positive_int(e.knn_every, "eval.knn_every", 0)
    _positive_int(e.knn_k, "eval.knn_k")
    if not e.knn_temperature > 0:
        raise ConfigError(f"eval.knn_temperature: must be > 0, got {e.knn_temperature}")
    _positive_int(e.max_train, "eval.max_train")
    _positive_int(e.max_test, "eval.max_test")
    r = cfg.ray
    _positive_int(r.num_workers, "ray.num_workers", 0)
    _positive_int(r.cache_shards, "ray.cache_shards")
    _positive_int(r.fetch_actors, "ray.fetch_actors")
    _positive_int(r.max_failures, "ray.max_failures", -1)
    for name in ("cpus_per_worker", "cache_shard_gpus", "cache_shard_cpus", "fetch_cpus"):
        if getattr(r, name) < 0:
            raise ConfigError(f"ray.{name}: must be >= 0, got {getattr(r, name)}")
    if r.num_workers and cfg.batch_size % r.num_workers:
        raise ConfigError(
            f"batch_size: {cfg.batch_size} is not divisible by ray.num_workers={r.num_workers}"
        )
    if num_images is not None:
        n = num_images
        if a.topk > n:
            raise ConfigError(f"adasim.topk: K={a.topk} must be <= N={n} images")
        if r.cache_shards > n:
            raise ConfigError(f"ray.cache_shards: {r.cache_shards} shards for only N={n} images")
        if cfg.batch_size > n:
            raise ConfigError(f"batch_size: {cfg.batch_size} is larger than the data set (N={n})")
    return cfg


def dump_config(cfg: PretrainConfig) -> str:
    """The config as YAML (what a run directory's ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
