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
from adasim_ray.data.spec import DEFAULT_SPEC
from adasim_ray.engine.config import BootstrapConfig
from adasim_ray.init_weights import InitSection, refuse_weight_kwargs
from adasim_ray.methods import DEFAULT_METHOD, METHODS

__all__ = ["ConfigError", "PretrainConfig", "config_class", "config_from_dict",
           "default_config", "dump_config", "load_config", "validate"]


@dataclass(frozen=True)
class AugmentSection:
    """The two global views (DINO's, with the AdaSim paper's crop scale).

    Attributes:
        image_size: side of the crops; None = the data set's native size when its images
            share one, else 224.
        max_image_size: at most this side when ``image_size`` is None (None = no cap): the
            ``cpu`` preset's 64 px keeps an epoch of 10k photos within minutes on a laptop;
            smaller native images keep their size.
        crop_scale: RandomResizedCrop scale range; the paper uses (0.25, 1).
        flip: horizontal flips; None = the data set's choice (off where mirroring changes an
            image's meaning, as for handwritten digits; on otherwise).
        jitter: colour jitter strengths (brightness, contrast, saturation, hue), DINO's
            (0.4, 0.4, 0.2, 0.1). Raise them (SimCLR's 0.8, 0.8, 0.8, 0.2) where an image's
            overall colour tells it apart from others but not its class: the views must
            differ in what the features should ignore.
        jitter_p: probability that a view is jittered (DINO's 0.8).
        grayscale_p: probability that a view turns grey, RGB only (DINO's 0.2).
    """

    image_size: int | None = None
    max_image_size: int | None = None
    crop_scale: tuple[float, float] = (0.25, 1.0)
    flip: bool | None = None
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2


@dataclass(frozen=True)
class EvalSection:
    """Online and final evaluation (DINO's k-NN protocol, linear probe, few-shot).

    Attributes:
        knn_every: run the k-NN evaluation every this many epochs (and at the end); 0 = only
            at the end.
        knn_k: neighbours voting (20).
        knn_temperature: vote weight exp(sim / T) (0.07).
        max_train: at most this many train images as the k-NN memory (None = all), a
            class-stratified sample drawn with ``subset_seed``, like ``limit_images``.
        max_test: at most this many test images (None = all), sampled the same way; the
            few-shot episodes draw from these.
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
        use_gpu: a GPU per worker (NCCL); else gloo on CPU.
        gpus_per_worker: GPUs reserved per Train worker with ``use_gpu``: 1, or a fraction
            so that the cache shards share the worker's GPU (one GPU for everything, as
            ``benchmarks/gpu_check.py`` runs).
        cpus_per_worker: CPUs reserved per Train worker.
        cache_shards: S, cache/window shard actors, each owning a contiguous id range.
        cache_shard_gpus: GPUs per shard actor (put Z on a GPU: queries in milliseconds).
        cache_shard_cpus: CPUs per shard actor.
        accelerator_type: the GPU type the Train workers run on (Ray's ``accelerator_type``,
            e.g. ``A100``): they are placed on nodes with it only. None = any GPU.
        cache_shard_accelerator_type: the same for the cache shard actors with
            ``cache_shard_gpus`` (e.g. ``A10G``, a node of their own: they never take the
            workers' GPUs).
        fetch_actors: concurrent Ray Data fetch tasks (load by index + augment) per rank.
        fetch_cpus: CPUs per fetch actor.
        fetch_block_mb: MiB of views per Ray Data block, at most: small views (28 px digits)
            travel as several fetch batches in one block, since every block costs the
            pipeline a fixed overhead (measured on 2 cores, each epoch's wait for its first
            batch counted: one block per batch of 64 pairs ran the demo's training at
            374-390 images/s, blocks of 16 batches at 464-478, the same views). A batch
            larger than this is a block of its own (224 px views always are); a rank's epoch
            keeps at least 3 blocks, so fetch and training overlap.
        max_failures: failures survived (a Train worker, a cache shard actor or a node
            lost): each restarts the worker group from the newest checkpoint; 3 by default,
            -1 without bound, 0 to stop at the first. A run that stops on a fault prints one
            line with the epoch reached and the ``--resume`` command (exit code 3).
        storage_path: where run directories live (a local path or s3:// gs:// URI);
            None = the ``--output`` directory.
    """

    address: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    cache_shards: int = 1
    cache_shard_gpus: float = 0.0
    cache_shard_cpus: float = 0.0
    accelerator_type: str | None = None
    cache_shard_accelerator_type: str | None = None
    fetch_actors: int = 2
    fetch_cpus: float = 0.0
    fetch_block_mb: float = 2.0
    max_failures: int = 3
    storage_path: str | None = None


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. Build it with :func:`load_config`, :func:`config_from_dict` or
    :func:`default_config`: they return an instance of :func:`config_class`, which adds one
    section per registered method (named after the method) to the fields below.

    Attributes:
        data: training data set, a spec of ``adasim_ray.data.spec`` (a built-in name or
            ``KIND:PATH``).
        data_labels: ``auto``: class sub-folders (or a Parquet ``label`` column) are the
            training images' labels, and a folder of loose images is unlabelled; ``none``:
            the training data's labels are not used (a nested folder whose sub-folders are
            not classes: every image below it is one image). AdaSim needs no labels; without
            them the run logs loss, bootstrapping ratio and the collapse monitors, and skips
            the k-NN (unless ``eval_data`` is a labelled data set).
        eval_data: evaluation data set; None = the test split of ``data`` (none for
            unlabelled training data: the k-NN is skipped).
        limit_images: train on this many images only (None = all): a random sample,
            stratified by class, drawn with ``subset_seed`` (``adasim_ray.data.subset``);
            CPU-sized runs.
        subset_seed: seeds every subset of the data (``limit_images``, ``eval.max_train``,
            ``eval.max_test``); separate from ``seed`` so that runs with different seeds
            train and evaluate on the same images.
        method: a registered method (``adasim_ray.methods.METHODS``); its section holds its
            hyper-parameters.
        backbone: a timm model name (``resnet50``, ``vit_small_patch16_224``, ...) or a CPU
            preset of ``adasim_ray.backbones``.
        backbone_kwargs: keyword arguments of the backbone's constructor (timm's, or the
            preset's), e.g. ``{drop_path_rate: 0.1}`` as DINO trains ViT-S/16; a key the
            constructor does not take is a one-line error at start.
        epochs: training epochs.
        batch_size: global batch (split over the workers).
        seed: seeds the model, the data order, the augmentations and the partner sampling.
        checkpoint_every: save a checkpoint every this many epochs (and at the end).
        checkpoint_every_steps: also save one every this many steps inside an epoch, with
            the data position (0 = off): a resume goes on from that step with the same pairs
            and views. Worth it where an epoch is hours; each save writes the cache shards.
        skip_corrupt: skip (and count) unreadable images instead of failing.
        parquet_cache_mb: the row groups of ``parquet:`` data that each reading process
            keeps (MiB); None = 256, or 1/64 of the node's memory when less. Random access
            at scale seldom hits the cache; a data set smaller than it is read once.
        amp: mixed precision of the training step on GPU workers (CPU workers ignore it):
            ``off``; ``fp16``: autocast to float16 with a GradScaler (the loss is scaled, a
            step whose gradients overflow is skipped and the scale lowered), as DINO's
            ``--use_fp16``; ``bf16``: autocast to bfloat16 without a scaler (float32's range;
            Ampere GPUs or newer); ``auto`` (the default): ``bf16`` where the worker's GPU
            supports it, else ``fp16``, off on a CPU. Weights, optimiser state, gradients'
            clipping and the cache's features stay float32. ``true`` / ``false`` (older
            configs) mean ``fp16`` / ``off``.
        sync_bn: under DDP on GPUs, turn every BatchNorm (ResNet backbones, a DINO head
            with ``use_bn_in_head``, SimSiam's projector) into SyncBatchNorm, which
            normalises over the global batch, as DINO's and SimSiam's references do. CPU
            workers keep per-rank BatchNorm (SyncBatchNorm needs GPUs).
        init: weights the backbone starts from (a state dict file, an export, a run, a timm
            pretrained tag; :class:`adasim_ray.init_weights.InitSection`); by default a
            random initialisation.
        tracking: an experiment tracker that rank 0 logs to besides TensorBoard (the same
            scalars, against the same global step; ``train/tracking.py``): ``none``,
            ``mlflow`` or ``wandb`` (the extras ``adasim-ray[mlflow]``, ``adasim-ray[wandb]``).
            The tracked run's id is kept in ``RUN_DIR/tracking.json``: a resumed run goes on
            in the same tracked run.
        tracking_uri: MLflow's tracking server or store (``http://HOST:5000``,
            ``sqlite:////ABS/PATH/mlflow.db``; None = ``MLFLOW_TRACKING_URI``), or a W&B
            server's base URL (None = W&B's own, or ``WANDB_BASE_URL``). A store on the
            file system needs an absolute path: the Train workers run in other directories.
        tracking_project: MLflow's experiment or W&B's project (None = ``adasim``).
        tracking_group: runs that belong together: W&B's group, the MLflow tag
            ``adasim.group``. None for a run of its own; a sweep's trials get the sweep's
            name (they share ``tracking_project`` too).
    """

    data: str = DEFAULT_SPEC
    data_labels: Literal["auto", "none"] = "auto"
    eval_data: str | None = None
    limit_images: int | None = None
    subset_seed: int = 0
    method: str = DEFAULT_METHOD
    backbone: str = "vit_tiny_cpu"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    checkpoint_every: int = 1
    checkpoint_every_steps: int = 0
    skip_corrupt: bool = False
    parquet_cache_mb: int | None = None
    amp: Literal["off", "fp16", "bf16", "auto"] | bool = "auto"
    sync_bn: bool = True
    tracking: Literal["none", "mlflow", "wandb"] = "none"
    tracking_uri: str | None = None
    tracking_project: str | None = None
    tracking_group: str | None = None
    adasim: BootstrapConfig = field(default_factory=BootstrapConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    eval: EvalSection = field(default_factory=EvalSection)
    ray: RaySection = field(default_factory=RaySection)
    init: InitSection = field(default_factory=InitSection)

    def replace(self, **changes: Any) -> PretrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def amp_mode(self) -> str:
        """``amp`` as ``off``, ``fp16``, ``bf16`` or ``auto`` (older configs' booleans
        mapped); a GPU worker resolves ``auto`` (``train/loop.py``)."""
        if isinstance(self.amp, bool):
            return "fp16" if self.amp else "off"
        return self.amp

    @property
    def method_config(self) -> Any:
        """The section of the chosen method (an instance of its registered config class)."""
        return getattr(self, self.method)


_CLASSES: dict[tuple[tuple[str, type], ...], type[PretrainConfig]] = {}


def config_class() -> type[PretrainConfig]:
    """:class:`PretrainConfig` with one field per registered method, named after it and typed
    by its config section, made from the registry (once per set of methods): a method
    registered after this module was imported gets its section all the same."""
    key = tuple((name, spec.config) for name, spec in METHODS.items())
    cls = _CLASSES.get(key)
    if cls is None:
        sections = [(name, section, field(default_factory=section)) for name, section in key]
        cls = _CLASSES[key] = dataclasses.make_dataclass(
            "PretrainConfigWithMethods", sections, bases=(PretrainConfig,), frozen=True
        )
        cls.__module__ = __name__
    return cls


def default_config() -> PretrainConfig:
    """Every field at its default, every registered method's section included."""
    return config_class()()


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
    """The config of a nested mapping (a YAML file's), strictly: one ConfigError line naming
    the first unknown key, bad value or unregistered method."""
    method = data.get("method", DEFAULT_METHOD)
    if method not in METHODS:
        raise ConfigError(f"method: must be one of {sorted(METHODS)}, got {method!r}")
    return from_dict(config_class(), data)


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
    refuse_weight_kwargs(cfg.backbone_kwargs)
    cfg.init.validate()
    _positive_int(cfg.epochs, "epochs")
    _positive_int(cfg.batch_size, "batch_size")
    _positive_int(cfg.checkpoint_every, "checkpoint_every")
    _positive_int(cfg.checkpoint_every_steps, "checkpoint_every_steps", minimum=0)
    _positive_int(cfg.limit_images, "limit_images")
    _positive_int(cfg.parquet_cache_mb, "parquet_cache_mb")
    _check_tracking_uri(cfg)
    a = cfg.adasim
    try:
        a.validate(num_images)
    except ValueError as err:
        raise ConfigError(f"adasim.{err}") from None
    if labelled is False and a.mode == "oracle":
        raise ConfigError(
            f"adasim.mode: 'oracle' draws same-class partners, but the data set {cfg.data!r} "
            "has no labels; use a labelled data set or another mode"
        )
    lo, hi = cfg.augment.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"augment.crop_scale: need 0 < min <= max <= 1, got {(lo, hi)}")
    _positive_int(cfg.augment.image_size, "augment.image_size", 4)
    jitter = tuple(cfg.augment.jitter)
    if min(jitter) < 0 or jitter[3] > 0.5:  # four of them: the loader checks
        raise ConfigError("augment.jitter: need 4 strengths (brightness, contrast, saturation, "
                          f"hue), each >= 0 and hue <= 0.5, got {jitter}")
    for name in ("jitter_p", "grayscale_p"):
        if not 0 <= getattr(cfg.augment, name) <= 1:
            raise ConfigError(f"augment.{name}: need a probability in [0, 1], got "
                              f"{getattr(cfg.augment, name)}")
    _positive_int(cfg.augment.max_image_size, "augment.max_image_size", 4)
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
    if not r.fetch_block_mb > 0:
        raise ConfigError(f"ray.fetch_block_mb: must be > 0, got {r.fetch_block_mb}")
    for name in ("cpus_per_worker", "cache_shard_gpus", "cache_shard_cpus", "fetch_cpus"):
        if getattr(r, name) < 0:
            raise ConfigError(f"ray.{name}: must be >= 0, got {getattr(r, name)}")
    g = r.gpus_per_worker
    if not (0 < g <= 1 or (g > 1 and g == int(g))):  # what Ray accepts for one actor
        raise ConfigError(f"ray.gpus_per_worker: a fraction in (0, 1] or a whole number of "
                          f"GPUs, got {g}")
    if r.accelerator_type and not r.use_gpu:
        raise ConfigError(f"ray.accelerator_type: {r.accelerator_type} is a GPU type, and "
                          "ray.use_gpu is false")
    if r.cache_shard_accelerator_type and not r.cache_shard_gpus:
        raise ConfigError(f"ray.cache_shard_accelerator_type: {r.cache_shard_accelerator_type} "
                          "is a GPU type, and ray.cache_shard_gpus is 0")
    if r.num_workers and cfg.batch_size % r.num_workers:
        raise ConfigError(
            f"batch_size: {cfg.batch_size} is not divisible by ray.num_workers={r.num_workers}"
        )
    if num_images is not None:
        n = num_images
        if r.cache_shards > n:
            raise ConfigError(f"ray.cache_shards: {r.cache_shards} shards for only N={n} images")
        if cfg.batch_size > n:
            raise ConfigError(f"batch_size: {cfg.batch_size} is larger than the data set (N={n})")
    return cfg


def _check_tracking_uri(cfg: PretrainConfig) -> None:
    """A tracker's store on the file system is named by an absolute path: a relative one
    would be resolved in each Train worker's own directory."""
    uri = cfg.tracking_uri
    if cfg.tracking != "mlflow" or not uri:
        return
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri
    path = path[len("file://"):] if path.startswith("file://") else path
    if "://" not in path and not path.startswith("/") and path != "databricks":
        raise ConfigError(f"tracking_uri: {uri!r} is a relative path, which each Train worker "
                          "would resolve in its own directory; give an absolute one (e.g. "
                          "sqlite:////home/me/mlflow.db)")


def dump_config(cfg: PretrainConfig) -> str:
    """The config as YAML (what a run directory's ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
