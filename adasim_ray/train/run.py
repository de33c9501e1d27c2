"""The driver of a pretraining run: Ray start-up, cache actors, Ray Data streams, TorchTrainer.

``pretrain`` validates everything it can before any Ray work (the config, the data set and its
size N), then starts or joins Ray, creates the S cache shard actors and the plan board, builds
one Ray Data stream per rank and runs the ``TorchTrainer``. A run directory
``<storage>/<run name>/`` receives ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``tensorboard/`` and Ray Train's ``checkpoint_*`` folders.

Resuming (``resume=RUN_DIR``): Ray 2.60's Train V2 continues a run that is started again with
the same name and storage path from its latest checkpoint; the cache shards are restored from
the same checkpoint. A checkpoint whose key settings differ is refused unless forced.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from adasim_ray.config import ConfigError, PretrainConfig, dump_config, validate
from adasim_ray.recipe import (
    build_backbone_for,
    labels_of,
    make_views,
    open_eval_sources,
    open_train_source,
)
from adasim_ray.resources.memory import bootstrap_memory
from adasim_ray.resources.storage import check_storage
from adasim_ray.train.checkpoint import (
    CheckpointError,
    check_compatible,
    damaged_checkpoints,
    key_settings,
    latest_checkpoint,
    read_meta,
)
from adasim_ray.train.faults import FAULT_ENV, parse_faults
from adasim_ray.train.hooks import pin_ray_address
from adasim_ray.train.rundir import (
    CONFIG,
    SUMMARY,
    MetricsLog,
    dumps,
    join,
    require_run_dir,
    write_text,
)


def new_run_name(cfg: PretrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.method}-{cfg.adasim.mode}-{stamp}-{uuid.uuid4().hex[:6]}"


def start_local_ray(**kwargs: Any) -> None:
    """A local Ray with the dashboard on (Train's placement-group cleanup needs its State API)
    and :func:`pin_ray_address` in every worker."""
    import ray

    ray.init(
        include_dashboard=True,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": pin_ray_address},
        # Ray kills idle worker processes after 1 s once more are alive than CPUs, so on a
        # small machine the Ray Data fetch processes died between epochs and every epoch
        # paid their start-up (imports, opening the data set) again: measured on 2 cores,
        # 8-20 s to the first batch of each epoch, 0.8 s with them kept.
        _system_config={"idle_worker_killing_time_threshold_ms": 10 * 60 * 1000},
        **kwargs,
    )


def init_ray(cfg: PretrainConfig) -> None:
    """Join the cluster named by ``ray.address`` / RAY_ADDRESS, else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        start_local_ray()


def resolve_resume(resume: str) -> tuple[str, str]:
    """(storage path, run name) of an existing run directory."""
    run_dir = require_run_dir(Path(resume).expanduser().resolve(), "--resume", ConfigError)
    return str(run_dir.parent), run_dir.name


def user_error(err: BaseException) -> Exception | None:
    """The data or config error at the root of a failed run (a corrupt image met by a Ray
    Data task, say), as a one-line error of ours; None when the failure is something else.

    Ray wraps a task's exception in its own (and Train in a worker-group error), so both the
    exception chain and, failing that, the text of the traceback are searched."""
    from adasim_ray.data import DataError

    seen, todo = set(), [err]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, (DataError, ConfigError, CheckpointError)):
            return type(cur)(str(cur).splitlines()[0]) if str(cur) else cur
        todo += [cur.__cause__, cur.__context__, getattr(cur, "cause", None)]
        failures = getattr(cur, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    for line in reversed(str(err).splitlines()):
        for name, kind in (("DataError: ", DataError), ("ConfigError: ", ConfigError)):
            if name in line:
                return kind(line.split(name, 1)[1].strip())
    return None


def check_eval_labels(cfg: PretrainConfig) -> None:
    """The online k-NN (and the final evaluation) need labelled eval images: say so at start,
    not after the first epoch."""
    memory, queries = open_eval_sources(cfg)
    for source in (memory, queries):
        if source.labels is None:
            raise ConfigError(
                f"eval_data: {source.name} has no labels, and the k-NN evaluation needs them; "
                "set eval_data to a labelled data set (e.g. class folders)"
            )


def checkpoint_bytes(cfg: PretrainConfig, num_images: int, feat_dim: int,
                     num_params: int) -> int:
    """About what one checkpoint takes: student + teacher + AdamW's two moments (fp32), and
    every cache shard's rows, window and partners (the engine's layout, as ``launch.py
    check`` reports it)."""
    return 4 * 4 * num_params + bootstrap_memory(cfg, num_images, feat_dim)["all_shards"]


def pretrain(
    cfg: PretrainConfig,
    output: str = "runs",
    *,
    resume: str | None = None,
    force: bool = False,
    run_name: str | None = None,
    log_every: int = 20,
    stop_after: int | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one pretraining run; returns its summary (also in ``summary.json``).

    ``stop_after`` ends the run after that many epochs as if it had been interrupted (the
    schedules still span ``cfg.epochs``): a hook for resume tests and time-boxed jobs.
    ``callbacks`` go to Ray Train's ``RunConfig`` (a sweep passes Tune's report callback).
    """
    t_start = time.perf_counter()
    source = open_train_source(cfg)
    num_images = len(source)
    validate(cfg, num_images, labelled=source.labels is not None)
    check_eval_labels(cfg)
    views = make_views(cfg, source)
    backbone, feat_dim = build_backbone_for(cfg, views)
    settings = key_settings(cfg, num_images, feat_dim)
    try:
        faults = os.environ.get(FAULT_ENV) or None
        parse_faults(faults)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    if resume is not None:
        storage, run_name = resolve_resume(resume)
        latest = latest_checkpoint(join(storage, run_name))
        damaged = damaged_checkpoints(join(storage, run_name))
        if latest is not None:
            check_compatible(read_meta(latest)["settings"], settings, force)
        elif damaged and not force:
            raise CheckpointError(
                f"--resume: no usable checkpoint in {resume}: {damaged[-1]}; "
                "pass --force to start it over"
            )
        for problem in damaged:
            print(f"[adasim] passing over a damaged checkpoint: {problem}", flush=True)
    else:
        storage = cfg.ray.storage_path or output
        run_name = run_name or new_run_name(cfg)
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    run_dir = join(storage, run_name)
    params = sum(p.numel() for p in backbone.parameters())
    check_storage(run_dir, checkpoint_bytes(cfg, num_images, feat_dim, params))
    write_text(join(run_dir, CONFIG), dump_config(cfg))

    import ray
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from adasim_ray.train.cache_actor import create_shard_actors
    from adasim_ray.train.loop import train_loop_per_worker
    from adasim_ray.train.pipeline import create_plan_board, rank_dataset

    init_ray(cfg)
    t_ray = time.perf_counter()
    # One line of progress per logged step is ours; Ray Data's bars would flood the console.
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False
    data_context.execution_options.preserve_order = True
    shards = create_shard_actors(
        run_name,
        num_images,
        feat_dim,
        cfg.adasim,
        cfg.ray.cache_shards,
        seed=cfg.seed,
        epochs=cfg.epochs,
        labels=labels_of(source),
        num_cpus=cfg.ray.cache_shard_cpus,
        num_gpus=cfg.ray.cache_shard_gpus,
    )
    board = create_plan_board(run_name)
    world = max(cfg.ray.num_workers, 1)
    per_rank_batch = cfg.batch_size // world
    launch = uuid.uuid4().hex
    datasets = {
        f"train_{r}": rank_dataset(cfg, run_name, num_images, r, world, per_rank_batch, launch)
        for r in range(world)
    }
    local_tb = "://" not in run_dir
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg,
            "run_name": run_name,
            "run_dir": run_dir,
            "num_images": num_images,
            "settings": settings,
            "log_every": log_every,
            "local_mode": cfg.ray.num_workers == 0,
            "stop_after": stop_after,
            "faults": faults,
            "driver_pid": os.getpid(),
            "tensorboard_dir": join(run_dir, "tensorboard") if local_tb else None,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker}
            | ({"GPU": 1} if cfg.ray.use_gpu else {}),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=DataConfig(
            datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # local mode raises the loop's error directly
        raise user_error(err) or err  # noqa: B904 - ours replaces Ray's wrapping on purpose
    finally:
        for handle in [*shards, board]:
            ray.kill(handle)
    if result.error is not None:
        raise user_error(result.error) or result.error
    rows = MetricsLog(run_dir).read()
    summary = {
        "run_dir": run_dir,
        "run_name": run_name,
        "num_images": num_images,
        "feat_dim": feat_dim,
        "epochs": len(rows),
        "final": rows[-1] if rows else {},
        "startup_s": t_ray - t_start,
        "wall_s": time.perf_counter() - t_start,
        "checkpoint": None if result.checkpoint is None else result.checkpoint.path,
    }
    write_text(join(run_dir, SUMMARY), dumps(summary))
    return summary
