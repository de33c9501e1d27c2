"""Ray Tune over the Ray pretraining: one trial = one full distributed run.

The pattern Ray 2.60 documents for Tune over Train V2: a function trainable builds the run's
``TorchTrainer`` (here through :func:`adasim_ray.train.run.pretrain`) with Tune's
``TuneReportCallback``, and the run is named after the trial id. A sweep directory holds:

    sweep.yaml         the sweep file as given, base.yaml the base config (overrides applied)
    trials/<trial id>/ each trial's run directory (config, metrics.jsonl, checkpoints, TB)
    tune/              Tune's experiment state (``--resume`` restores from it)
    results.md, results.csv, knn_vs_factors.png   the table (``report.py``)

A trial that is started again (a retry after a failure, or a restored sweep) finds its run
directory and continues from the run's last checkpoint (and its tracked run, with
``tracking``). The trials of a sweep share ``tracking_project`` and are one group in the
tracker (``tracking_group``: the sweep's name, unless the base config names one). The trial
function itself reserves no CPU, so trials never starve their own Train workers; how many
run at once follows from what one trial's workers, shards and fetch tasks reserve.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

from adasim_ray.config import PretrainConfig, validate
from adasim_ray.configfile import ConfigError
from adasim_ray.preflight import check_tracking
from adasim_ray.resources.placement import run_bundles, totals
from adasim_ray.rundir.layout import file_type, is_run_dir, join, write_text
from adasim_ray.sweep.spec import Sweep, apply_point, load_sweep, trials_root

TUNE_NAME = "tune"
SWEEP_FILE = "sweep.yaml"
BASE_FILE = "base.yaml"
ERROR_FILE = "error.txt"
POINT_KEY = "point"
# The trial function only waits on its TorchTrainer: it reserves no CPU (a fraction of one
# would keep a 2-CPU machine from ever placing a 2-CPU worker), only a little memory (Tune
# refuses a trial that reserves nothing).
TRIAL_RESOURCES = {"CPU": 0, "memory": 64 * 2**20}


def trial_resources(cfg: PretrainConfig) -> dict[str, float]:
    """What one trial's run reserves: Train workers (or the training loop itself, with
    ``ray.num_workers=0``), cache shards and fetch tasks; the totals of the bundles that
    ``adasim-ray check`` places (``adasim_ray.resources.placement.run_bundles``)."""
    cpus, gpus = totals(run_bundles(cfg))
    return {"CPU": cpus, "GPU": gpus}


def concurrent_trials(need: dict[str, float], have: dict[str, float]) -> int:
    """How many trials fit the cluster at once (>= 1; 0 means not even one fits)."""
    fits = [math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(0, min(fits)) if fits else 1


def run_trial(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str,
              log_every: int, group: str | None = None) -> None:
    """Tune's function trainable: the pretraining run of one point of the search;
    ``group``: the sweep's name, the trials' ``tracking_group`` unless the base has one."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from adasim_ray.rundir.metrics import MetricsLog
    from adasim_ray.train.run import pretrain

    trial_id = ray.tune.get_context().get_trial_id()
    run_dir = join(trials_dir, trial_id)
    point = {k: v for k, v in params.items() if k != POINT_KEY}
    point.update(params.get(POINT_KEY) or {})
    try:
        cfg = validate(apply_point(base, point))
    except ConfigError as err:
        write_text(join(run_dir, ERROR_FILE), f"{err}\n")
        write_text(join(run_dir, "point.json"), json.dumps(point))
        raise
    # The trial's run goes into trials_dir, wherever the base's storage_path pointed.
    cfg = cfg.replace(ray=dataclasses.replace(cfg.ray, storage_path=None),
                      tracking_group=cfg.tracking_group or group)
    if file_type(join(run_dir, "summary.json")) == pafs.FileType.File:
        # Finished before the sweep was interrupted (Tune's own state may be older than
        # that): hand Tune the final metrics again, train nothing.
        print(f"[sweep] trial {trial_id}: already finished, not rerun", flush=True)
        rows = MetricsLog(run_dir).read()
        final = {k: v for k, v in (rows[-1] if rows else {}).items() if v is not None}
        ray.tune.report(final)
        return
    resume = run_dir if is_run_dir(run_dir) else None
    if resume:
        print(f"[sweep] trial {trial_id}: continuing {run_dir}", flush=True)
    pretrain(
        cfg,
        trials_dir,
        resume=resume,
        run_name=trial_id,
        log_every=log_every,
        callbacks=[TuneReportCallback()],
    )


def _domain(spec: dict[str, Any]) -> Any:
    from ray import tune

    (kind, args), = spec.items()
    if kind == "choice":
        return tune.choice(args)
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]))
    if kind == "quniform":
        return tune.quniform(*args)
    return getattr(tune, kind)(float(args[0]), float(args[1]))


def _trainable(sweep: Sweep, sweep_dir: Path, log_every: int) -> Any:
    from ray import tune

    fn = tune.with_parameters(
        run_trial, base=sweep.base, trials_dir=trials_root(sweep.base, sweep_dir),
        log_every=log_every, group=Path(sweep_dir).name
    )
    return tune.with_resources(fn, TRIAL_RESOURCES)


def _cluster_resources() -> dict[str, float]:
    import ray

    total = ray.cluster_resources()
    return {"CPU": float(total.get("CPU", 0.0)), "GPU": float(total.get("GPU", 0.0))}


def plan_concurrency(sweep: Sweep, max_trials: int | None) -> int:
    """``max_concurrent_trials`` from the file, else as many as the cluster holds."""
    from adasim_ray.config import config_from_dict

    need = trial_resources(config_from_dict(sweep.base))
    have = _cluster_resources()
    fits = concurrent_trials(need, have)
    if fits == 0:
        raise ConfigError(
            f"one trial reserves {need['CPU']:g} CPUs and {need['GPU']:g} GPUs, the cluster "
            f"has {have['CPU']:g} CPUs and {have['GPU']:g} GPUs: lower ray.cpus_per_worker or "
            f"ray.num_workers"
        )
    wanted = sweep.max_concurrent_trials or fits
    if sweep.max_concurrent_trials and sweep.max_concurrent_trials > fits:
        print(
            f"[sweep] max_concurrent_trials {sweep.max_concurrent_trials} > {fits} that fit: "
            f"the extra trials wait for resources",
            flush=True,
        )
    if max_trials is not None:
        wanted = min(wanted, max_trials)
    return max(1, wanted)


def allow_epochs_without_the_metric() -> None:
    """An epoch without a k-NN evaluation (``eval.knn_every`` > 1, as in the paper's
    800-epoch runs) reports no knn_top1, and Tune would end the sweep at the first such
    result. The searcher (:func:`optuna_searcher`) and ASHA (which needs knn_every 1,
    spec.py) skip results without the metric."""
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def optuna_searcher() -> type:
    """Ray's ``OptunaSearch``, given only the results that hold the metric. Made on first use
    (Optuna is imported only by Optuna sweeps) and kept in this module, where the pickled
    state of a sweep finds it again on ``--resume``."""
    cls = globals().get("OptunaSearchOnMeasuredEpochs")
    if cls is None:
        from ray.tune.search.optuna import OptunaSearch

        def on_trial_result(self: Any, trial_id: str, result: dict) -> None:
            if self.metric in result:
                OptunaSearch.on_trial_result(self, trial_id, result)

        cls = type("OptunaSearchOnMeasuredEpochs", (OptunaSearch,),
                   {"on_trial_result": on_trial_result, "__module__": __name__})
        globals()["OptunaSearchOnMeasuredEpochs"] = cls
    return cls


def build_tuner(sweep: Sweep, sweep_dir: Path, *, max_trials: int | None, log_every: int) -> Any:
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, TuneConfig

    search = sweep.search
    search_alg = None
    if search.algorithm == "grid":
        points = sweep.points()
        if max_trials is not None:
            points = points[:max_trials]
        param_space: dict[str, Any] = {POINT_KEY: tune.grid_search(points)}
        num_samples = 1
    else:
        import optuna

        param_space = {name: _domain(spec) for name, spec in search.space.items()}

        search_alg = optuna_searcher()(sampler=optuna.samplers.TPESampler(seed=search.seed))
        num_samples = min(search.num_samples, max_trials or search.num_samples)
    allow_epochs_without_the_metric()
    scheduler = None
    if sweep.scheduler.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            grace_period=sweep.scheduler.grace_period,
            reduction_factor=sweep.scheduler.reduction_factor,
            # One past the last epoch: a trial that reaches the end is never stopped by ASHA
            # before its run has written its summary and final evaluation.
            max_t=max(_epochs(sweep) + 1, sweep.scheduler.grace_period + 1),
        )
    return tune.Tuner(
        _trainable(sweep, sweep_dir, log_every),
        param_space=param_space,
        tune_config=TuneConfig(
            metric=search.metric,
            mode=search.mode,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=plan_concurrency(sweep, max_trials),
        ),
        run_config=RunConfig(
            name=TUNE_NAME,
            storage_path=str(sweep_dir),
            failure_config=FailureConfig(max_failures=sweep.trial_max_failures),
            verbose=1,
        ),
    )


def _epochs(sweep: Sweep) -> int:
    from adasim_ray.config import config_from_dict

    return config_from_dict(sweep.base).epochs


def new_sweep_dir(output: str, config_path: str) -> Path:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(output).expanduser().resolve() / f"sweep-{Path(config_path).stem}-{stamp}"


def run_sweep(
    config_path: str,
    output: str = "sweeps",
    *,
    overrides: list[str] | None = None,
    max_trials: int | None = None,
    log_every: int = 50,
) -> Path:
    """Start a sweep; returns its directory (the table is written there at the end)."""
    from adasim_ray.sweep.report import write_report
    from adasim_ray.train.run import init_ray

    sweep = load_sweep(config_path, overrides)
    _validate_points(sweep)
    base = validate(apply_point(sweep.base, {}))
    tracking = check_tracking(base)  # before any trial: each would fail on it
    if tracking is not None:
        raise ConfigError(tracking)
    sweep_dir = new_sweep_dir(output, config_path)
    sweep_dir.mkdir(parents=True)
    shutil.copyfile(config_path, sweep_dir / SWEEP_FILE)
    (sweep_dir / BASE_FILE).write_text(yaml.safe_dump(sweep.base, sort_keys=False))
    print(f"[sweep] directory: {sweep_dir}", flush=True)
    init_ray(base)
    tuner = build_tuner(sweep, sweep_dir, max_trials=max_trials, log_every=log_every)
    tuner.fit()
    write_report(sweep_dir)
    return sweep_dir


def resume_sweep(sweep_dir: str, *, log_every: int = 50) -> Path:
    """Restore an interrupted sweep: finished trials stay, unfinished ones continue from
    their checkpoints, errored ones are tried again."""
    from ray import tune

    from adasim_ray.sweep.report import write_report
    from adasim_ray.train.run import init_ray

    path = Path(sweep_dir).expanduser().resolve()
    if not (path / SWEEP_FILE).is_file():
        raise ConfigError(f"--resume: {path} is not a sweep directory (no {SWEEP_FILE})")
    state = path / TUNE_NAME
    base = yaml.safe_load((path / BASE_FILE).read_text())
    sweep = load_sweep(path / SWEEP_FILE, base=base)
    init_ray(validate(apply_point(sweep.base, {})))
    if not tune.Tuner.can_restore(str(state)):
        raise ConfigError(f"--resume: {path} holds no Tune state to restore ({state})")
    print(f"[sweep] resuming {path}", flush=True)
    allow_epochs_without_the_metric()
    optuna_searcher()  # the class a pickled Optuna searcher names
    tuner = tune.Tuner.restore(
        str(state),
        trainable=_trainable(sweep, path, log_every),
        resume_unfinished=True,
        resume_errored=True,
    )
    tuner.fit()
    write_report(path)
    return path


def _validate_points(sweep: Sweep) -> None:
    """Say which grid points are invalid before any run (they will fail alone)."""
    for point in sweep.points():
        try:
            validate(apply_point(sweep.base, point))
        except ConfigError as err:
            print(f"[sweep] warning: trial {point} will fail: {err}", flush=True)
