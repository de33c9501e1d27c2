"""A sweep file: a base pretraining config plus a search space over dotted config fields.

No Ray here: this module reads and checks the file and lists the grid's points; ``tuner.py``
hands them to Ray Tune.

    base: ../adasim_ray/presets/demo.yaml   # optional; relative to this file; default: the demo
    pretrain:                               # optional; overrides of the base, nested
      epochs: 4
    search:
      algorithm: grid                       # grid | optuna
      metric: knn_top1
      mode: max
      center: {adasim.tau: 0.2, adasim.window: 10, adasim.topk: 3}
      factors:                              # grid: values of each factor
        adasim.tau: [0.0, 0.05, 0.1, 0.2, 0.4]
      one_factor_at_a_time: true            # the paper's Table 4; false = the full product
      space:                                # optuna: one distribution per field
        adasim.tau: {uniform: [0.0, 0.5]}
      num_samples: 8                        # optuna's trial budget
    scheduler:
      asha: false                           # ASHA early stopping on the metric
      grace_period: 2
      reduction_factor: 2
    max_concurrent_trials: null             # null: as many as the cluster's CPUs/GPUs hold
    trial_max_failures: 1                   # retries of a failed trial, from its checkpoint
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adasim_ray.config import PretrainConfig, config_from_dict, default_config
from adasim_ray.configfile import (
    ConfigError,
    flatten,
    from_dict,
    parse_override,
    read_yaml,
    set_dotted,
)

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice", "quniform")

# Short column names of the paper's Table 4; other fields keep their dotted name.
SHORT_NAMES = {"adasim.tau": "tau", "adasim.window": "w", "adasim.topk": "K"}


@dataclass(frozen=True)
class SearchSection:
    algorithm: Literal["grid", "optuna"] = "grid"
    metric: str = "knn_top1"
    mode: Literal["max", "min"] = "max"
    center: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)
    one_factor_at_a_time: bool = True
    space: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 8
    seed: int = 0


@dataclass(frozen=True)
class SchedulerSection:
    asha: bool = False
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True)
class SweepFile:
    base: str | None = None
    pretrain: dict[str, Any] = field(default_factory=dict)
    search: SearchSection = field(default_factory=SearchSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    max_concurrent_trials: int | None = None
    trial_max_failures: int = 1


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: the base config (as a dict, overrides applied) and the search."""

    base: dict[str, Any]
    search: SearchSection
    scheduler: SchedulerSection
    max_concurrent_trials: int | None
    trial_max_failures: int

    @property
    def factors(self) -> list[str]:
        """The swept fields, in the file's order."""
        if self.search.algorithm == "optuna":
            return list(self.search.space)
        return list(dict.fromkeys([*self.search.center, *self.search.factors]))

    def points(self) -> list[dict[str, Any]]:
        """The grid's points (dotted field -> value), the centre first; [] for optuna."""
        if self.search.algorithm != "grid":
            return []
        return grid_points(self.search)

    def trial_config(self, point: dict[str, Any]) -> PretrainConfig:
        """The pretraining config of one trial (raises ConfigError naming the field)."""
        return apply_point(self.base, point)


def apply_point(base: dict[str, Any], point: dict[str, Any]) -> PretrainConfig:
    data = copy.deepcopy(base)
    for key, value in point.items():
        set_dotted(data, key.split("."), value)
    return config_from_dict(data)


def grid_points(search: SearchSection) -> list[dict[str, Any]]:
    """One factor at a time around ``center`` (each factor's values with the others at the
    centre, the centre once), or the full product of ``factors`` when that is off."""
    if not search.one_factor_at_a_time:
        names = list(search.factors)
        combos = itertools.product(*(search.factors[n] for n in names))
        return [{**search.center, **dict(zip(names, combo, strict=True))} for combo in combos]
    points = [dict(search.center)]
    for name, values in search.factors.items():
        for value in values:
            point = {**search.center, name: value}
            if point not in points:
                points.append(point)
    return points


def _check_search(search: SearchSection, scheduler: SchedulerSection) -> None:
    if search.algorithm == "grid":
        if not search.factors and not search.center:
            raise ConfigError("search.factors: a grid sweep needs at least one factor")
        for name, values in search.factors.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"search.factors.{name}: expected a non-empty list of values")
        if search.one_factor_at_a_time:
            missing = [n for n in search.factors if n not in search.center]
            if missing:
                raise ConfigError(
                    f"search.center: one factor at a time needs a centre value for {missing[0]}"
                )
    else:
        if not search.space:
            raise ConfigError("search.space: an optuna sweep needs at least one field")
        for name, dist in search.space.items():
            _check_distribution(name, dist)
        if search.num_samples < 1:
            raise ConfigError(f"search.num_samples: must be >= 1, got {search.num_samples}")
    if scheduler.grace_period < 1:
        raise ConfigError(f"scheduler.grace_period: must be >= 1, got {scheduler.grace_period}")
    if scheduler.reduction_factor < 2:
        raise ConfigError(
            f"scheduler.reduction_factor: must be >= 2, got {scheduler.reduction_factor}"
        )


def _check_distribution(name: str, dist: Any) -> None:
    where = f"search.space.{name}"
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}: [...]}}")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (known: {DISTRIBUTIONS})")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}: expected a list of arguments")
    if kind != "choice":
        if len(args) != (3 if kind == "quniform" else 2):
            shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
            raise ConfigError(f"{where}.{kind}: expected {shape}")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"{where}.{kind}: bounds must be numbers, got {args}")
        if not args[0] < args[1]:
            raise ConfigError(f"{where}.{kind}: low must be < high, got {args}")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"{where}.loguniform: low must be > 0, got {args[0]}")


def default_base_path() -> Path:
    from adasim_ray.presets import default_config_path

    return default_config_path()


def load_sweep(
    path: str | Path, overrides: list[str] | None = None, *, base: dict[str, Any] | None = None
) -> Sweep:
    """Read and check a sweep file; ``overrides`` (``key=value``) apply to the base config.

    ``base`` replaces the file's ``base`` + ``pretrain`` (a sweep directory keeps the base it
    started with). The base must be a valid config and every swept name a config field.
    """
    path = Path(path)
    raw = from_dict(SweepFile, read_yaml(path))
    if base is None:
        base_path = default_base_path() if raw.base is None else (path.parent / raw.base)
        if not base_path.is_file():
            raise ConfigError(f"base: config file not found: {base_path}")
        base = read_yaml(base_path)
        for keys, value in flatten(raw.pretrain):
            set_dotted(base, keys, value)
        for text in overrides or []:
            keys, value = parse_override(text)
            set_dotted(base, keys, value)
    cfg = config_from_dict(base)  # the base itself must be a valid config
    _check_search(raw.search, raw.scheduler)
    if raw.max_concurrent_trials is not None and raw.max_concurrent_trials < 1:
        raise ConfigError(
            f"max_concurrent_trials: must be >= 1, got {raw.max_concurrent_trials}"
        )
    if raw.trial_max_failures < 0:
        raise ConfigError(f"trial_max_failures: must be >= 0, got {raw.trial_max_failures}")
    sweep = Sweep(
        base=base,
        search=raw.search,
        scheduler=raw.scheduler,
        max_concurrent_trials=raw.max_concurrent_trials,
        trial_max_failures=raw.trial_max_failures,
    )
    for name in sweep.factors:
        _check_field_exists(name)
    if raw.scheduler.asha and raw.search.metric == "knn_top1" and cfg.eval.knn_every != 1:
        raise ConfigError(
            "scheduler.asha: early stopping on knn_top1 needs eval.knn_every: 1 "
            f"(it is {cfg.eval.knn_every})"
        )
    return sweep


def _check_field_exists(name: str) -> None:
    """A swept field must name a field of the pretraining config."""
    defaults = default_config()
    node: Any = defaults
    for part in name.split("."):
        if not hasattr(node, part):
            raise ConfigError(f"search: {name} is not a config field")
        node = getattr(node, part)


#: The folder of the trials' run directories, in the sweep directory or on storage.
TRIALS = "trials"


def trials_root(base: dict[str, Any], sweep_dir: str | Path) -> str:
    """Where the trials' run directories live: ``SWEEP/trials`` beside Tune's state, or, when
    the base config names a ``ray.storage_path`` (the paper's configs: s3://...), the
    sweep's folder there, ``STORAGE/<sweep name>/trials``, so that checkpoints go where the
    runs of the paper go and the report reads them there."""
    storage = (base.get("ray") or {}).get("storage_path")
    if not storage:
        return str(Path(sweep_dir) / TRIALS)
    return "/".join([str(storage).rstrip("/"), Path(sweep_dir).name, TRIALS])



def is_sweep_file(path: str | Path) -> bool:
    """A YAML with a top-level ``search`` section is a sweep file, not a pretraining config."""
    return "search" in read_yaml(path)
