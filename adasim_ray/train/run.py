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

import functools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.data import ExecutionOptions
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from adasim_ray.config import ConfigError, PretrainConfig, dump_config
from adasim_ray.data import ImageSource, describe, fingerprint
from adasim_ray.preflight import EVAL_ROLES, preflight, recipe_line
from adasim_ray.recipe import labels_of
from adasim_ray.resources.memory import bootstrap_memory, human_bytes, shard_ram_bytes
from adasim_ray.resources.placement import (
    cluster_nodes,
    free_nodes,
    local_nodes,
    shard_nodes,
    shortfall,
)
from adasim_ray.resources.storage import check_staging, check_storage, resolve
from adasim_ray.rundir.checkpoint import (
    CheckpointError,
    check_compatible,
    damaged_checkpoints,
    key_settings,
    latest_checkpoint,
    read_meta,
)
from adasim_ray.rundir.layout import (
    CONFIG,
    SUMMARY,
    dumps,
    join,
    require_run_dir,
    split,
    write_text,
)
from adasim_ray.rundir.lease import RunLease
from adasim_ray.rundir.metrics import MetricsLog
from adasim_ray.train.allocator import allocator_env
from adasim_ray.train.board import create_plan_board
from adasim_ray.train.cache_actor import create_shard_actors
from adasim_ray.train.contract import WorkerPlan
from adasim_ray.train.failures import StopOnStorageError, ending, stopped_on_sigterm
from adasim_ray.train.faults import FAULT_ENV, parse_faults
from adasim_ray.train.hooks import pin_ray_address
from adasim_ray.train.loop import train_loop_per_worker
from adasim_ray.train.pipeline import rank_dataset
from adasim_ray.train.preemption import SaveOnSigterm, driver_sigterm


def new_run_name(cfg: PretrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.method}-{cfg.adasim.mode}-{stamp}-{uuid.uuid4().hex[:6]}"


def worker_runtime_env() -> dict[str, Any]:
    """The runtime_env of a driver of ours: :func:`pin_ray_address` in every worker, and the
    allocator's settings (``train/allocator.py``) in its environment."""
    env = allocator_env()
    return {"worker_process_setup_hook": pin_ray_address} | ({"env_vars": env} if env else {})


#: Ray Train's polling interval of its worker group (seconds) and the one a local Ray gets.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
LOCAL_HEALTH_CHECK_S = 0.5
#: Ray Train's switch for its preemption watcher, which a local Ray goes without.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def start_local_ray(**kwargs: Any) -> None:
    """A local Ray with the dashboard on (Train's placement-group cleanup needs its State API),
    and :func:`worker_runtime_env` (the address pinned, the allocator's settings) in every
    worker."""
    # Ray Train's controller polls its workers every 2 s, so it saw the end of a run (or a
    # dead worker) seconds late: measured on 2 cores, 5.1-5.5 s from a short run's last epoch
    # to fit's return at 2 s, 1.0-1.3 s at 0.25 s. Every process of a local Ray inherits the
    # environment of the one that starts it; one poll costs the controller a remote call.
    os.environ.setdefault(HEALTH_CHECK_ENV, str(LOCAL_HEALTH_CHECK_S))
    # Ray Train's preemption watcher polls the nodes for a cloud's pre-emption notices, which
    # a machine's own Ray never gets, and every run printed an error line of Ray's about it
    # ("... 'PreemptionWatcher' ... has constructor arguments in the object store and
    # max_restarts > 0"). A local Ray goes without it; a user's own setting stands. (Its
    # process stays in Ray's pool of idle workers: no process fewer, measured.)
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    kwargs.setdefault("address", "local")  # a new Ray, never one `ray start` left running
    ray.init(
        include_dashboard=True,
        configure_logging=False,
        runtime_env=worker_runtime_env(),
        # Ray kills idle worker processes after 1 s once more are alive than CPUs, so on a
        # small machine the Ray Data fetch processes died between epochs and every epoch
        # paid their start-up (imports, opening the data set) again: measured on 2 cores,
        # 8-20 s to the first batch of each epoch, 0.8 s with them kept.
        # Ray runs its worker processes at niceness 15 and its own daemons (GCS, raylet,
        # dashboard) at 0: on a small machine every tick a daemon wants is taken from the
        # training step. Measured on 2 cores (benchmarks/step_overhead.py): the bare step
        # loop in a Ray task ran at 0.60x of the same loop in the driver with niceness 15,
        # 1.02x with 0. A local Ray's workers run at the daemons' priority.
        _system_config={"idle_worker_killing_time_threshold_ms": 10 * 60 * 1000,
                        "worker_niceness": 0},
        **kwargs,
    )


def init_ray(cfg: PretrainConfig) -> None:
    """Join the cluster named by ``ray.address`` / RAY_ADDRESS, else start a local Ray."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if not address:
        start_local_ray()
    elif "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        ray.init(address=address)  # `ray job submit`: the job's runtime_env stands as given
    else:  # a driver of its own on a cluster: its workers get the hook as a local Ray's do
        ray.init(address=address, runtime_env=worker_runtime_env())


def check_placeable(cfg: PretrainConfig, *, joined: bool = False) -> None:
    """A run whose requests can never be placed fails in one line naming the field, before
    any actor starts and before the run directory is written (Ray would retry "insufficient
    resources" forever). Checked against the Ray this process already runs on, else against
    this machine (the local Ray that :func:`init_ray` would start). A cluster named by
    ``ray.address`` / RAY_ADDRESS may grow with its autoscaler: it is checked once joined
    (``joined=True``), and the same line then says that the run waits for nodes."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address and not joined:
        return  # judged once joined, against the cluster's nodes
    nodes = cluster_nodes() if ray.is_initialized() else local_nodes()
    problem = shortfall(cfg, nodes)
    if problem is None:
        return
    if address:
        print(f"[adasim] waiting for the cluster to grow: {problem} (an autoscaler adds "
              "nodes up to its max_workers; `adasim-ray check --cluster CLUSTER_YAML` says "
              "whether they will fit)", flush=True)
        return
    raise ConfigError(f"{problem}; this Ray cannot grow: lower the request or "
                      "ray.num_workers (adasim-ray check shows what fits)")


def resolve_resume(resume: str) -> tuple[str, str]:
    """(storage path, run name) of an existing run directory."""
    return split(require_run_dir(resume, "--resume", ConfigError))


def checkpoint_bytes(cfg: PretrainConfig, num_images: int, feat_dim: int,
                     state_bytes: int) -> int:
    """About what one checkpoint takes: the method's state as it declares it (``state_bytes``:
    its networks and the optimiser's slots), and every cache shard's rows, window and
    partners (the engine's layout, as ``adasim-ray check`` reports it)."""
    return state_bytes + bootstrap_memory(cfg, num_images, feat_dim)["all_shards"]


@dataclass(frozen=True)
class RunPlan:
    """What the driver settles before any Ray work: the training set and its size N, the
    cache's feature dimension, the settings a checkpoint must match, where the run lives."""

    source: ImageSource
    num_images: int
    feat_dim: int
    settings: dict[str, Any]
    storage: str
    run_name: str
    faults: str | None
    shard_ram: int = 0  # bytes of RAM each cache shard actor reserves (Ray's ``memory``)
    pair_bytes: int = 0  # bytes of a training pair's two uint8 views (Ray Data's block size)
    evaluates: bool = True  # a k-NN to run (labelled data or eval_data)

    @property
    def run_dir(self) -> str:
        return join(self.storage, self.run_name)


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
    t_start, wall_start = time.perf_counter(), time.time()
    plan = plan_run(cfg, output, resume=resume, force=force, run_name=run_name)
    lease = RunLease.acquire(plan.run_dir)  # one driver per run, before it writes anything
    try:
        write_text(join(plan.run_dir, CONFIG), dump_config(cfg))
        print(f"[adasim] run directory: {plan.run_dir}", flush=True)
        init_ray(cfg)
        check_placeable(cfg, joined=True)
        t_ray = time.perf_counter()
        actors = start_bootstrap_actors(cfg, plan)
        trainer = build_trainer(cfg, plan, log_every=log_every, stop_after=stop_after,
                                callbacks=callbacks)
        try:
            with driver_sigterm(board=actors[-1]):  # SIGTERM: checkpoint, then stop
                result = trainer.fit()
        except Exception as err:  # local mode raises the loop's error directly
            raise stop_error(err, cfg, plan) from err
        finally:
            for handle in actors:
                ray.kill(handle)
        if result.error is not None:
            raise stop_error(result.error, cfg, plan) from result.error
        stop = stopped_since(plan.run_dir, wall_start)
        if stop is not None:
            raise stopped_on_sigterm(plan.run_dir, stop["epoch"] + 1, stop["step"], cfg.epochs)
        return write_summary(plan, result, startup_s=t_ray - t_start, t_start=t_start)
    finally:
        lease.release()


def stopped_since(run_dir: str, since: float) -> dict[str, Any] | None:
    """The meta of the run's newest checkpoint if a SIGTERM stop took it after ``since``
    (``loop.save_step_checkpoint``; Ray Train's result holds no report without a checkpoint)."""
    latest = latest_checkpoint(run_dir)
    meta = read_meta(latest) if latest is not None else {}
    return meta if meta.get("stopped_at", 0) > since else None


def stop_error(err: BaseException, cfg: PretrainConfig, plan: RunPlan) -> Exception:
    """One line for a run that failed (``failures.ending``): the user's error, or the fault
    with the epoch reached and the ``--resume`` command."""
    try:
        latest = latest_checkpoint(plan.run_dir)
        checkpoint_epoch = None if latest is None else int(read_meta(latest)["epoch"])
        epochs_done = len(MetricsLog(plan.run_dir).read())
    except Exception:  # noqa: BLE001 - the storage itself may be what failed
        checkpoint_epoch, epochs_done = None, 0
    return ending(err, run_dir=plan.run_dir, epochs_done=epochs_done, epochs=cfg.epochs,
                  checkpoint_epoch=checkpoint_epoch, max_failures=cfg.ray.max_failures)


def plan_run(cfg: PretrainConfig, output: str, *, resume: str | None, force: bool,
             run_name: str | None) -> RunPlan:
    """Everything that can fail before any Ray work, in one line each: the pre-flight
    (``adasim_ray/preflight.py``: the config against the data set, its labels, the method),
    the resources, the fault hooks, a resumed run's checkpoint, the storage and its room for
    checkpoints. Writes nothing: ``pretrain`` takes the run's lease, then writes its
    ``config.yaml``."""
    found = preflight(cfg)
    found.raise_first()
    source, views = found.source, found.views
    assert source is not None and views is not None and found.feat_dim is not None
    num_images, feat_dim, state_bytes = len(source), found.feat_dim, found.state_bytes or 0
    check_placeable(cfg)
    print(f"[adasim] recipe: {recipe_line(cfg, found)}", flush=True)
    print(f"[adasim] train: {describe(source)}; views of {views.size} px", flush=True)
    for part, role in EVAL_ROLES.items():
        if part in found.eval_sources:
            print(f"[adasim] {role}: {describe(found.eval_sources[part])}", flush=True)
    if found.no_eval is not None:
        print(f"[adasim] {found.no_eval}", flush=True)
    settings = key_settings(cfg, num_images, feat_dim, fingerprint(source))
    faults = fault_spec()
    if resume is not None:
        storage, run_name = resume_target(resume, settings, force)
    else:
        storage, run_name = cfg.ray.storage_path or output, run_name or new_run_name(cfg)
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    shard_ram = shard_ram_bytes(cfg, num_images, feat_dim)
    pair_bytes = 2 * views.channels * views.size**2  # the anchor's and partner's views
    plan = RunPlan(source, num_images, feat_dim, settings, storage, run_name, faults, shard_ram,
                   pair_bytes, found.evaluates)
    check_storage(plan.run_dir, checkpoint_bytes(cfg, num_images, feat_dim, state_bytes))
    shard_bytes = bootstrap_memory(cfg, num_images, feat_dim)["all_shards"]
    check_staging(state_bytes + shard_bytes // max(cfg.ray.cache_shards, 1))
    return plan


def fault_spec() -> str | None:
    """``ADASIM_FAULT`` (see ``faults.py``), checked here so that a typo fails at start."""
    faults = os.environ.get(FAULT_ENV) or None
    try:
        parse_faults(faults)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return faults


def resume_target(resume: str, settings: dict[str, Any], force: bool) -> tuple[str, str]:
    """(storage, run name) of the run directory to resume, whose newest complete checkpoint
    must have the same key settings (unless ``force``); damaged ones are passed over."""
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
    return storage, run_name


def start_bootstrap_actors(cfg: PretrainConfig, plan: RunPlan) -> list[ray.actor.ActorHandle]:
    """The S cache shard actors and the plan board, last (named after the run, so that the
    Train workers and the fetch tasks find them). Each shard goes to the node it takes when the
    Train workers are placed first on what the cluster has free now (``placement.assign``),
    so that no shard takes a GPU slice or CPUs that the worker group needs. The board's
    process starts while the shards' do; all are up on return."""
    board = create_plan_board(plan.run_name)
    shards = create_shard_actors(
        plan.run_name,
        plan.num_images,
        plan.feat_dim,
        cfg.adasim,
        cfg.ray.cache_shards,
        seed=cfg.seed,
        epochs=cfg.epochs,
        labels=labels_of(plan.source),
        num_cpus=cfg.ray.cache_shard_cpus,
        num_gpus=cfg.ray.cache_shard_gpus,
        memory=plan.shard_ram,
        node_ids=shard_node_ids(cfg, plan.shard_ram),
        accelerator_type=(cfg.ray.cache_shard_accelerator_type
                          if cfg.ray.cache_shard_gpus else None),
    )
    ray.get(board.current.remote())
    return [*shards, board]


def shard_node_ids(cfg: PretrainConfig, shard_ram: int) -> list[str | None]:
    """The Ray node of each cache shard, the Train workers placed first on what is free now
    (None: Ray's choice). A shard that fits nowhere beside the workers stops the run in one
    line on a Ray that cannot grow; on one that can, Ray places it when nodes come."""
    where = shard_nodes(cfg, free_nodes(), shard_ram)
    if all(node is not None for node in where):
        return [node.node_id for node in where]  # type: ignore[union-attr]
    missing = sum(node is None for node in where)
    what = (f"{missing} of {len(where)} cache shards ({cfg.ray.cache_shard_cpus:g} CPU, "
            f"{cfg.ray.cache_shard_gpus:g} GPU, {human_bytes(shard_ram)} RAM each) do not fit "
            "beside the Train workers on what this Ray has free")
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        raise ConfigError(f"ray.cache_shards: {what}; lower ray.cache_shard_gpus / "
                          "ray.cache_shard_cpus or raise ray.cache_shards (adasim-ray check "
                          "shows where each shard goes)")
    print(f"[adasim] {what}: Ray places them as nodes come", flush=True)
    return [None if node is None else node.node_id for node in where]


def build_trainer(cfg: PretrainConfig, plan: RunPlan, *, log_every: int,
                  stop_after: int | None, callbacks: list[Any] | None) -> TorchTrainer:
    """The ``TorchTrainer``: the worker loop and its config, one Ray Data stream of pairs
    per rank, the workers' resources, the run's name and storage, checkpoints and retries."""
    # One line of progress per logged step is ours; Ray Data's bars would flood the console.
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False
    data_context.execution_options.preserve_order = True
    world = max(cfg.ray.num_workers, 1)
    launch = uuid.uuid4().hex
    datasets = {
        f"train_{r}": rank_dataset(cfg, plan.run_name, plan.num_images, r, world,
                                   cfg.batch_size // world, launch, plan.pair_bytes)
        for r in range(world)
    }
    worker_plan = WorkerPlan(
        config=cfg,
        run_name=plan.run_name,
        run_dir=plan.run_dir,
        num_images=plan.num_images,
        settings=plan.settings,
        launch=launch,
        driver_pid=os.getpid(),
        local_mode=cfg.ray.num_workers == 0,
        log_every=log_every,
        stop_after=stop_after,
        faults=plan.faults,
        evaluate=plan.evaluates,
    )
    # Ray Train's own reads and writes of the run (checkpoint uploads) go through the run's
    # guarded storage too, and a permanent storage error ends the run without a restart.
    storage_fs, storage_path = resolve(plan.storage)
    callbacks = [*(callbacks or []), StopOnStorageError()]
    return TorchTrainer(
        functools.partial(train_loop_per_worker, worker_plan),
        scaling_config=ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            accelerator_type=cfg.ray.accelerator_type if cfg.ray.use_gpu else None,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker}
            | ({"GPU": cfg.ray.gpus_per_worker} if cfg.ray.use_gpu else {}),
        ),
        run_config=RunConfig(
            name=plan.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[*(callbacks or []), SaveOnSigterm()],  # in every Train worker
        ),
        datasets=datasets,
        dataset_config=DataConfig(
            datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )


def write_summary(plan: RunPlan, result: Any, *, startup_s: float,
                  t_start: float) -> dict[str, Any]:
    """``summary.json``: where the run is, N, d, the last epoch's metrics, timings and the
    final checkpoint; returned as well."""
    rows = MetricsLog(plan.run_dir).read()
    summary = {
        "run_dir": plan.run_dir,
        "run_name": plan.run_name,
        "num_images": plan.num_images,
        "feat_dim": plan.feat_dim,
        "epochs": len(rows),
        "evaluates": plan.evaluates,
        "final": rows[-1] if rows else {},
        "startup_s": startup_s,
        "wall_s": time.perf_counter() - t_start,
        "checkpoint": None if result.checkpoint is None  # a path on the storage's file system
        else join(plan.run_dir, split(result.checkpoint.path)[1]),
    }
    write_text(join(plan.run_dir, SUMMARY), dumps(summary))
    return summary
