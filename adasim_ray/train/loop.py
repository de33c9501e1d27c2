"""The Ray Train worker loop: DDP pretraining with AdaSim partners and the sharded cache.

Per epoch (Algorithm 1 with the plan of past epochs, see ``adasim_ray.engine.partners``):

1. rank 0 publishes the epoch's partner plan (computed by the cache shards at the end of the
   previous epoch, and published then) on the plan board; all ranks meet at a barrier and
   start the epoch's stream of pairs (:class:`NextEpoch`), before the previous epoch's
   evaluation and checkpoint, so that its first views are made meanwhile;
2. every rank iterates its own Ray Data stream of (t(x_i), t'(x_j*)) pairs and takes DDP steps;
   after each step the anchors' teacher features are gathered and rank 0 sends them to the
   cache shards without waiting (query before write, then record the top-K);
3. rank 0 closes the epoch in the shards (window slot, next plan); every rank embeds its
   share of the images of the online k-NN (``online_eval.py``), which rank 0 runs; rank 0
   writes the checkpoint (model, optimiser, schedules' position, RNG, and the cache shards,
   once) and every rank calls ``ray.train.report`` once.

Inside an epoch, every ``checkpoint_every_steps`` steps and when a SIGTERM asks
(``preemption.py``), rank 0 writes a checkpoint of the step reached, with the epoch's data
position and its monitors so far; a resume from it publishes the position with the plan, so
the fetch makes the rest of the epoch's pairs and views as an uninterrupted run does. These
are kept in the run directory, not reported to Ray Train (a report is an epoch: a sweep's
scheduler counts them), and dropped once an epoch's checkpoint is reported.

The functions follow that story, as DINO's ``train_dino`` and ``train_one_epoch`` do:
:func:`train_loop_per_worker` calls :func:`start_worker`, :func:`resume`, then per epoch
:func:`publish_plan`, :func:`train_one_epoch`, :func:`evaluate_epoch`, :func:`close_epoch`
(rank 0) and :func:`report`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from adasim_ray.augmentations import GlobalViews
from adasim_ray.config import PretrainConfig
from adasim_ray.data import ImageSource
from adasim_ray.errors import first_line
from adasim_ray.evaluation.progress import clock
from adasim_ray.figures.neighbours import GRID_LEGEND, supports_grid
from adasim_ray.init_sources import read_init
from adasim_ray.methods import StepOutput, train_step
from adasim_ray.recipe import build_model, make_views, open_eval_sources, open_train_source
from adasim_ray.rundir.checkpoint import (
    STAGING_PREFIX,
    complete_checkpoints,
    drop_step_checkpoints,
    keep_checkpoint,
    prune_shard_files,
    read_checkpoint,
    read_meta,
    restore_rng,
    rng_state,
    shard_uris,
    write_checkpoint,
)
from adasim_ray.rundir.layout import split
from adasim_ray.rundir.logs import raise_if_stopped, record_resume, record_stop
from adasim_ray.rundir.metrics import MetricsLog
from adasim_ray.train.allocator import keep_freed_memory
from adasim_ray.train.board import plan_board_name
from adasim_ray.train.cache_actor import ShardedCache
from adasim_ray.train.contract import WorkerPlan
from adasim_ray.train.failures import user_error
from adasim_ray.train.faults import FaultInjector, parse_faults
from adasim_ray.train.hooks import quiet_ray_console
from adasim_ray.train.online_eval import online_evaluation
from adasim_ray.train.preemption import (
    finished,
    seconds_since_signal,
    stop_requested,
    training_ended,
)
from adasim_ray.train.speed import configure_gpu
from adasim_ray.train.tensorboard import RunBoard
from adasim_ray.train.tracking import Tracker, start_tracking
from adasim_ray.train.upload import upload_checkpoint

#: The plan metrics of a run's first epoch (its plan pairs every image with itself).
# The checkpoints of a run are read from its storage (Ray Train's and local mode's both live
# in the run directory), in preference to the one Ray Train hands back: a worker killed hard
# can lose the checkpoint it reported within the controller's last poll, though its files
# are complete on the storage.
RAY_CHECKPOINT = "<ray train's checkpoint>"
FIRST_PLAN = {"bootstrap_ratio": 0.0, "nn_top1": None, "nn2_top1": None}
FINAL_KEYS = ("knn_top5", "linear_top1", "fewshot_mean", "fewshot_ci95")


class PreemptedError(Exception):
    """A stop asked by SIGTERM, taken after ``step`` steps of ``epoch`` (its checkpoint
    written)."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"stopped in epoch {epoch + 1} after step {step}")
        self.epoch, self.step = epoch, step


@dataclass
class Worker:
    """What one Train worker holds through the run; the cache, the plan board, the metrics
    log, TensorBoard and the tracker only on rank 0, which drives the cache shards,
    checkpoints and logs."""

    cfg: PretrainConfig
    plan: WorkerPlan
    rank: int
    world: int
    device: torch.device
    views: GlobalViews
    method: nn.Module
    model: nn.Module  # ``method`` as prepared by Ray Train (DDP when world > 1)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    faults: FaultInjector
    eval_sources: tuple[ImageSource, ImageSource] | None  # None: no k-NN (unlabelled data)
    cache: ShardedCache | None = None
    board: Any = None
    metrics_log: MetricsLog | None = None
    tensorboard: RunBoard | None = None
    tracker: Tracker | None = None  # MLflow or W&B (``tracking``)
    train_source: ImageSource | None = None
    distinct_partners: float | None = None  # share of images that are some image's partner
    channels_last: bool = False  # a ConvNet on a GPU: the views in channels-last memory too
    host_group: Any = None  # gloo group for the ids beside NCCL (GPU workers, world > 1)
    # the float32 views of the last step, rewritten in place by the next (GlobalViews.normalize)
    view_buffers: list[torch.Tensor | None] = field(default_factory=lambda: [None, None])
    # a checkpoint inside an epoch, resumed: its step, monitors so far and lr (until used)
    progress: dict[str, Any] | None = None
    stop_poll: list[Any] = field(default_factory=list)  # rank 0's call to the board in flight

    @property
    def run_dir(self) -> str:
        return self.plan.run_dir


def train_loop_per_worker(plan: WorkerPlan) -> dict[str, Any]:
    """Entry point of each Train worker (``TorchTrainer(partial(train_loop_per_worker,
    plan))``). A user's error (a corrupt image, say) is recorded for this launch, so that a
    restart of the worker group raises it at once rather than training up to it again."""
    raise_if_stopped(plan.run_dir, plan.launch)
    try:
        return _train(plan)
    except Exception as err:
        found = user_error(err)
        if found is not None:
            record_stop(plan.run_dir, plan.launch, found)
        raise
    finally:
        training_ended()


def _train(plan: WorkerPlan) -> dict[str, Any]:
    worker = start_worker(plan)
    try:
        return _epochs(worker)
    except BaseException:
        if worker.tensorboard is not None:
            worker.tensorboard.close(failed=True)
        if worker.tracker is not None:
            worker.tracker.close(failed=True)
        raise


def _epochs(worker: Worker) -> dict[str, Any]:
    cfg = worker.cfg
    start_epoch, plan_metrics = resume(worker)
    start_step = worker.progress["step"] if worker.progress else 0
    if worker.metrics_log is not None:
        worker.metrics_log.truncate(start_epoch)  # epochs after the checkpoint are redone
        if worker.plan.tensorboard:  # and their steps are hidden in TensorBoard
            worker.tensorboard = RunBoard(
                worker.run_dir, start_epoch * worker.method.iters_per_epoch + start_step + 1)
        # the run's tracked run, new or continued; the steps it holds are not logged again
        worker.tracker = start_tracking(worker.run_dir, cfg)
    last: dict[str, Any] = {}
    stop_after = worker.plan.stop_after
    end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    ahead: NextEpoch | None = None
    for epoch in range(start_epoch, cfg.epochs):
        epoch_t0 = time.perf_counter()
        if ahead is None:
            resumed_inside = start_step if epoch == start_epoch else 0
            publish_plan(worker, epoch, resumed_inside * (cfg.batch_size // max(worker.world, 1)))
            ahead = NextEpoch.start(worker, epoch)
        try:
            metrics = train_one_epoch(worker, epoch, plan_metrics, epoch_t0, ahead)
        except PreemptedError as stop:
            last = report_stop(worker, stop)
            break
        next_plan = worker.cache.end_epoch() if worker.cache is not None else None
        ahead = None
        if epoch + 1 < end:  # the next epoch's views are made while this one is evaluated
            publish_plan(worker, epoch + 1)
            ahead = NextEpoch.start(worker, epoch + 1)
        evaluation = evaluate_epoch(worker, epoch)
        ckpt_dir = None
        if worker.cache is not None:
            ckpt_dir = close_epoch(worker, epoch, metrics, evaluation, next_plan, epoch_t0)
            plan_metrics = next_plan
        report(worker, metrics, ckpt_dir, epoch)
        last = metrics
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    if worker.cache is not None:  # the shard files of checkpoints let go at the last save
        prune_shard_files(worker.run_dir)
    if worker.tensorboard is not None:
        worker.tensorboard.close()
    if worker.tracker is not None:
        worker.tracker.close()
    return last


def start_worker(plan: WorkerPlan) -> Worker:
    """The model, optimiser and data views of this rank; on rank 0 also the cache client,
    the plan board, the fault hooks, the evaluation sets and the metrics log."""
    cfg = plan.config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    # As many torch threads as CPUs reserved, whatever imported torch first in this process:
    # a thread count that differs between launches changes the float sums (measured: the
    # same run driven in-process or from `launch.py` differed by 3e-7 in the first loss).
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    keep_freed_memory()  # a step's activations are not paged in anew at every step
    quiet_ray_console()  # the run prints its own progress and per-epoch metrics

    source = open_train_source(cfg)
    views = make_views(cfg, source)
    method = build_model(cfg, views, plan.num_images, world, init=read_init(cfg.init))
    if cfg.sync_bn and world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    channels_last = configure_gpu(method, method.eval_backbone(), device)
    optimizer = method.build_optimizer()
    amp = resolve_amp(cfg.amp_mode, device)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    model = ray.train.torch.prepare_model(method)
    worker = Worker(cfg, plan, rank, world, device, views, method, model, optimizer,
                    scaler, amp_dtype, FaultInjector([], plan.run_dir),
                    open_eval_sources(cfg) if plan.evaluate else None,
                    channels_last=channels_last, host_group=host_group(world, device))
    if rank == 0:
        worker.cache = ShardedCache.by_name(plan.run_name, cfg.ray.cache_shards,
                                            cfg.adasim.topk)
        worker.board = ray.get_actor(plan_board_name(plan.run_name))
        worker.faults = FaultInjector(parse_faults(plan.faults), plan.run_dir,
                                      plan.driver_pid, worker.cache.handles)
        worker.metrics_log = MetricsLog(plan.run_dir)
        worker.train_source = source  # Fig. 1's images
    return worker


def resolve_amp(mode: str, device: torch.device) -> str:
    """The step's mixed precision on ``device``: off on a CPU; ``auto`` is bf16 where the GPU
    supports it (Ampere or newer), else fp16."""
    if device.type != "cuda":
        return "off"
    if mode == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return mode


def resume(worker: Worker) -> tuple[int, dict[str, Any]]:
    """(first epoch to train, the metrics of its plan): continue from the newest checkpoint
    that loads (a restarted worker group, or ``--resume``), else start the cache shards
    empty. Only rank 0, which restores the shards, reads their states."""
    loaded = load_newest_checkpoint(worker)
    if loaded is None:
        if worker.cache is not None:
            worker.cache.reset()  # a restarted shard actor, or a fresh run: start empty
        return 0, FIRST_PLAN
    meta, state = loaded
    worker.method.load_state_dict(state["model"])
    worker.optimizer.load_state_dict(state["optimizer"])
    if worker.scaler is not None and state.get("scaler"):
        worker.scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    start_epoch = int(meta["epoch"])
    worker.progress = state.get("progress")  # a checkpoint inside epoch start_epoch + 1
    if worker.cache is not None:
        where = (f"epoch {start_epoch + 1} step {worker.progress['step']}" if worker.progress
                 else f"epoch {start_epoch}")
        print(f"[adasim] resumed from checkpoint at {where}", flush=True)
        record_resume(worker.run_dir, start_epoch)
    return start_epoch, meta["plan_metrics"]


def load_newest_checkpoint(worker: Worker) -> tuple[Any, Any] | None:
    """(meta, model state) of the newest complete checkpoint of the run that loads, or None;
    on rank 0 the cache shards are restored from it too (each shard actor reads its own
    file). Rank 0 tries the checkpoints newest first (one that fails to load, its content
    corrupt though its sizes match, is passed over with one line) and tells the other ranks
    which it took, so that every rank resumes from the same one. Ray Train's own checkpoint
    is the last resort (a run directory that lists none)."""
    loaded, chosen = None, None
    if worker.rank == 0:
        for path in complete_checkpoints(worker.run_dir):
            try:
                loaded = _restore(worker, path)
            except Exception as err:  # noqa: BLE001 - a shard actor's error comes wrapped
                print(f"[adasim] passing over a checkpoint that does not load: {path}: "
                      f"{first_line(user_error(err) or err)}", flush=True)
                continue
            chosen = str(path)
            break
        if chosen is None and ray.train.get_checkpoint() is not None:
            chosen = RAY_CHECKPOINT
    if worker.world > 1 and dist.is_initialized():
        box = [chosen]
        dist.broadcast_object_list(box, src=0)
        chosen = box[0]
    if chosen is None or loaded is not None:
        return loaded
    if chosen != RAY_CHECKPOINT:
        return _restore(worker, chosen)
    with ray.train.get_checkpoint().as_directory() as directory:
        return _restore(worker, directory)


def _restore(worker: Worker, checkpoint: str | Path) -> tuple[Any, Any]:
    """(meta, model state) of one checkpoint; rank 0 also restores the shards from it."""
    with_shards = worker.cache is not None
    meta, state, states = read_checkpoint(checkpoint, run_dir=worker.run_dir,
                                          shards=with_shards and "shard_files" not in
                                          read_meta(checkpoint))
    if with_shards:
        if states:  # a checkpoint of the older layout: the states inside, read here
            worker.cache.load_states(states)
        else:
            worker.cache.load_files(shard_uris(meta, worker.run_dir))
    return meta, state


def publish_plan(worker: Worker, epoch: int, start: int = 0) -> None:
    """Rank 0 puts the epoch's partner plan on the plan board, where the fetch tasks of every
    rank read it, with the position of each rank's share to start at (a resume inside the
    epoch); no rank starts the epoch before it is there."""
    if worker.cache is not None:
        plan = worker.cache.partners()
        # a collapse monitor that needs no labels: partners all alike is a collapsed space
        worker.distinct_partners = len(np.unique(plan)) / max(len(plan), 1)
        plan_ref = ray.put(plan)
        ray.get(worker.board.publish.remote(epoch, [plan_ref], start))
    _barrier(worker.world)


@dataclass
class NextEpoch:
    """An epoch's stream of pairs, started as soon as its plan is published: a thread takes
    its first batch at once, so that the fetch tasks make the epoch's first views while the
    previous epoch is evaluated and checkpointed (on a GPU node: the CPUs fetch while the
    GPU evaluates). Whether the first batch was there when the epoch began is the epoch's
    ``prefetched`` metric."""

    epoch: int
    batches: Iterator[dict[str, torch.Tensor]]
    first: Future

    @classmethod
    def start(cls, worker: Worker, epoch: int) -> NextEpoch:
        batches = iter(ray.train.get_dataset_shard(f"train_{worker.rank}").iter_torch_batches(
            batch_size=worker.cfg.batch_size // max(worker.world, 1), drop_last=False,
            prefetch_batches=2, device="cpu", pin_memory=worker.device.type == "cuda",
        ))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"adasim-epoch-{epoch}")
        first = pool.submit(next, batches, None)
        pool.shutdown(wait=False)
        return cls(epoch, batches, first)

    def stream(self) -> Iterator[dict[str, torch.Tensor]]:
        first = self.first.result()
        if first is not None:
            yield first
            yield from self.batches


def train_one_epoch(worker: Worker, epoch: int, plan_metrics: dict[str, Any],
                    epoch_t0: float, ahead: NextEpoch) -> dict[str, Any]:
    """One pass over this rank's stream of pairs: the DDP steps, the anchors' features sent
    to the cache, a progress line every ``log_every`` steps; the epoch's training metrics.

    Throughput counts from the second step on; the wait for the first batch is reported
    apart (``first_batch_s``). An epoch resumed inside goes on from the checkpoint's step
    and monitors (``worker.progress``). After each step but the last, the ranks agree
    whether to stop (:func:`stop_agreed`); a checkpoint of the step is written when due or
    when stopping, and a stop raises :class:`PreemptedError`."""
    cfg, rank, world = worker.cfg, worker.rank, worker.world
    iters, log_every = worker.method.iters_per_epoch, worker.plan.log_every
    if ahead.epoch != epoch:
        raise RuntimeError(f"the stream of epoch {ahead.epoch} was handed to epoch {epoch}")
    prefetched = ahead.first.done()
    stream = ahead.stream()
    monitors = worker.method.monitors  # what the method logs, its own names
    progress, worker.progress = worker.progress or {}, None
    sums: dict[str, list[float]] = progress.get("sums") or {name: [] for name in monitors}
    lr = progress.get("lr", float("nan"))
    step = first_step = progress.get("step", 0)
    images, steady_t0, steady_images, first_batch_s = 0, None, 0, float("nan")
    worker.model.train()
    for batch in stream:
        it = epoch * iters + step
        worker.faults.at_step(it)
        out = take_step(worker, batch, it)
        for name in monitors:
            value = out.monitors.get(name)
            if isinstance(value, (int, float)):
                sums[name].append(float(value))
        lr = out.monitors["lr"]
        step += 1
        images += len(batch["anchor"]) * world
        if steady_t0 is None:
            steady_t0, steady_images = time.perf_counter(), images
            first_batch_s = steady_t0 - epoch_t0
        if rank == 0 and (step % log_every == 0 or step == iters):
            steady = max(time.perf_counter() - steady_t0, 1e-9)
            rate = (images - steady_images) / steady
            eta = eta_text(step, iters, steady / max(step - first_step - 1, 1), epoch,
                           cfg.epochs, first_batch_s)
            print(f"[adasim] epoch {epoch + 1}/{cfg.epochs} step {step}/{iters} "
                  f"{rate:.0f} img/s loss {out.monitors['loss']:.4f} "
                  f"bootstrap {plan_metrics['bootstrap_ratio']:.3f} {eta}", flush=True)
            if worker.tensorboard is not None:
                worker.tensorboard.step(it + 1, out.monitors, (*monitors, "lr"))
            if worker.tracker is not None:
                worker.tracker.log(it + 1, {f"step/{k}": out.monitors.get(k)
                                            for k in (*monitors, "lr")})
        if step < iters:
            stopping = stop_agreed(worker)
            every = cfg.checkpoint_every_steps
            if stopping or (every and step % every == 0):
                save_step_checkpoint(worker, epoch, {"step": step, "sums": sums, "lr": lr},
                                     plan_metrics, stopping=stopping)
            if stopping:
                raise PreemptedError(epoch, step)
    train_s = time.perf_counter() - epoch_t0
    steady_s = time.perf_counter() - steady_t0 if steady_t0 else float("nan")
    if step != iters:
        raise RuntimeError(f"epoch {epoch}: ran {step} steps, the schedules expect {iters}")
    return {
        "epoch": epoch + 1,
        **{name: _mean(values) if values else None for name, values in sums.items()},
        "lr": lr,
        "images_per_s": ((images - steady_images) / steady_s if step > first_step + 1
                         else float("nan")),
        "train_s": train_s,
        "first_batch_s": first_batch_s,
        "prefetched": prefetched,
        "gpu_mem_peak_gb": (torch.cuda.max_memory_allocated(worker.device) / 1e9
                            if worker.device.type == "cuda" else None),
        **{k: plan_metrics[k] for k in ("bootstrap_ratio", "nn_top1", "nn2_top1")},
        "distinct_partners": worker.distinct_partners,
    }


def eta_text(step: int, iters: int, step_s: float, epoch: int, epochs: int,
             first_batch_s: float) -> str:
    """``eta epoch M:SS, run H:MM:SS``: the steps left in this epoch at ``step_s`` each, and
    the epochs after it at this epoch's pace (its wait for the first batch included; the
    evaluations and checkpoints between epochs are not counted).

    Examples:
        >>> eta_text(10, 50, 0.5, epoch=0, epochs=3, first_batch_s=2.0)
        'eta epoch 0:20, run 1:14'
    """
    epoch_left = (iters - step) * step_s
    per_epoch = iters * step_s + (0.0 if math.isnan(first_batch_s) else first_batch_s)
    run_left = epoch_left + (epochs - epoch - 1) * per_epoch
    return f"eta epoch {clock(epoch_left)}, run {clock(run_left)}"


def take_step(worker: Worker, batch: dict[str, torch.Tensor], it: int) -> StepOutput:
    """One DDP step on a batch of pairs; the anchors' features of all ranks go to rank 0,
    which sends them to the cache shards without waiting for the answer.

    The views arrive as uint8 (pinned on a GPU worker) and are normalised on the device.
    Host synchronisations per step: the monitors (one, in ``train_step``), a GradScaler's
    overflow check (fp16 only), and on rank 0 the copy of the gathered features for the
    cache; the ``all_gather`` of the other ranks does not wait on the host."""
    buffers = worker.view_buffers
    anchor = buffers[0] = worker.views.normalize(
        batch["anchor"].to(worker.device, non_blocking=True), buffers[0])
    partner = buffers[1] = worker.views.normalize(
        batch["partner"].to(worker.device, non_blocking=True), buffers[1])
    if worker.channels_last:
        anchor = anchor.contiguous(memory_format=torch.channels_last)
        partner = partner.contiguous(memory_format=torch.channels_last)
    out = train_step(worker.model, worker.optimizer, anchor, partner, it, worker.scaler,
                     worker.amp_dtype)
    # The ids stay on the host: gathered over a gloo group beside NCCL on GPUs, so they
    # never travel to the GPU and back.
    ids = _gather(batch["anchor_id"], worker.world, worker.host_group)
    feats = _gather(out.anchor_feature.float(), worker.world)
    if worker.cache is not None:
        worker.cache.submit(ids.cpu().numpy(), feats.cpu().numpy())
    return out


def evaluate_epoch(worker: Worker, epoch: int) -> dict[str, Any] | None:
    """The online k-NN when due (every ``eval.knn_every`` epochs and at the end, where the
    linear probe and few-shot join it), spread over all ranks; the result on rank 0."""
    cfg = worker.cfg
    final = epoch + 1 == cfg.epochs
    if worker.eval_sources is None:
        return None  # unlabelled data: the run said so at start
    if not (final or (cfg.eval.knn_every and (epoch + 1) % cfg.eval.knn_every == 0)):
        return None
    return online_evaluation(
        worker.method.eval_backbone(), cfg, worker.eval_sources, worker.views, final=final,
        rank=worker.rank, world=worker.world, device=worker.device, amp_dtype=worker.amp_dtype,
    )


def close_epoch(worker: Worker, epoch: int, metrics: dict[str, Any],
                evaluation: dict[str, Any] | None, next_plan: dict[str, Any],
                epoch_t0: float) -> str | None:
    """Rank 0 at the end of an epoch, once the shards have planned the next one: record
    the evaluation, checkpoint when due, log. Returns the checkpoint directory to report,
    or None. ``metrics`` gains the evaluation and timing entries."""
    cfg = worker.cfg
    final = epoch + 1 == cfg.epochs
    metrics["knn_top1"] = None if evaluation is None else evaluation["knn_top1"]
    if final and evaluation is not None:
        metrics.update({k: evaluation[k] for k in FINAL_KEYS})
    metrics["cache_busy_s"] = worker.cache.busy_seconds()
    metrics["wall_s"] = time.perf_counter() - epoch_t0
    ckpt_dir = None
    if final or (epoch + 1) % cfg.checkpoint_every == 0:
        ckpt_dir = save_checkpoint(worker, epoch, metrics, next_plan)
        draw_neighbours(worker, epoch)
    log_epoch(worker, metrics)
    return ckpt_dir


#: Queries of the Fig. 1 grid drawn into TensorBoard at each checkpoint.
FIGURE_QUERIES = 6


def draw_neighbours(worker: Worker, epoch: int) -> None:
    """Fig. 1 of the state just checkpointed as a TensorBoard image (``neighbours``):
    queries spread over p(other), their supports and partner probabilities. A picture that
    cannot be drawn (an image that no longer reads, say) is one line, never the run's end."""
    if worker.tensorboard is None or worker.train_source is None:
        return
    cfg, source = worker.cfg, worker.train_source
    try:
        items = worker.cache.neighbour_supports(FIGURE_QUERIES, cfg.adasim.tau)
        wanted = sorted({i for s in items for i in [s.query, *s.ids]})
        images = dict(zip(wanted, source.load_many(wanted), strict=True))
        labels = {i: source.label(i) for i in wanted}
        worker.tensorboard.image("neighbours", supports_grid(items, images, labels),
                                 (epoch + 1) * worker.method.iters_per_epoch, GRID_LEGEND)
    except Exception as err:  # noqa: BLE001 - a picture is not worth a run
        print(f"[adasim] no Fig. 1 in TensorBoard after epoch {epoch + 1}: "
              f"{first_line(err)}", flush=True)


def save_checkpoint(worker: Worker, epoch: int, metrics: dict[str, Any],
                    next_plan: dict[str, Any]) -> str:
    """Write the checkpoint of the end of ``epoch`` into a fresh temporary directory: model,
    optimiser, scaler, RNG and the schedules' position, the cache shards (once, from their
    actors) and ``meta.json`` last."""
    ckpt_dir = tempfile.mkdtemp(prefix=STAGING_PREFIX)
    try:
        _write(worker, ckpt_dir, epoch + 1, metrics, next_plan)
    except BaseException:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise
    return ckpt_dir


def save_step_checkpoint(worker: Worker, epoch: int, progress: dict[str, Any],
                         plan_metrics: dict[str, Any], stopping: bool = False) -> None:
    """Rank 0 writes the checkpoint of step ``progress["step"]`` inside ``epoch`` straight
    into the run directory (``checkpoint_epoch_<E>_step_<S>``, E the epochs done); the other
    ranks go on and meet rank 0 at the next step's collectives. The checkpoint of a stop
    says when it was taken (``stopped_at``), which the driver reads."""
    if worker.cache is None:
        return
    t0 = time.perf_counter()
    ckpt_dir = tempfile.mkdtemp(prefix=STAGING_PREFIX)
    try:
        _write(worker, ckpt_dir, epoch, {}, plan_metrics, progress,
               stopped_at=time.time() if stopping else None)
        keep_checkpoint(ckpt_dir, worker.run_dir, epoch, step=progress["step"])
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    since = seconds_since_signal()
    print(f"[adasim] checkpoint of epoch {epoch + 1} step {progress['step']} written in "
          f"{time.perf_counter() - t0:.1f} s"
          + ("" if since is None else f", {since:.1f} s after this worker's SIGTERM"),
          flush=True)


def _write(worker: Worker, ckpt_dir: str, epochs_done: int, metrics: dict[str, Any],
           plan_metrics: dict[str, Any], progress: dict[str, Any] | None = None,
           stopped_at: float | None = None) -> None:
    """The files of a checkpoint after ``epochs_done`` epochs and, with ``progress``,
    ``progress["step"]`` steps of the next; ``plan_metrics`` are those of the plan of the
    epoch that the checkpoint resumes."""
    save_id = uuid.uuid4().hex[:8]
    step = progress["step"] if progress else 0
    # The shard actors write their own files to the run's storage first; meta.json, which
    # lists them with their sizes, comes last.
    shard_files = worker.cache.save_files(worker.run_dir, epochs_done, save_id)
    prune_shard_files(worker.run_dir, keep=split(split(shard_files[0][0])[0])[1])
    write_checkpoint(
        ckpt_dir,
        model_state={
            "model": worker.method.state_dict(),
            "optimizer": worker.optimizer.state_dict(),
            "scaler": worker.scaler.state_dict() if worker.scaler is not None else None,
            "rng": rng_state(),  # torch (CPU and CUDA), numpy, Python
            "it": epochs_done * worker.method.iters_per_epoch + step,
            "progress": progress,
        },
        shard_files=shard_files,
        meta={
            "epoch": epochs_done,
            **({"step": step} if step else {}),
            **({"stopped_at": stopped_at} if stopped_at else {}),
            "settings": worker.plan.settings,
            "plan_metrics": plan_metrics,
            "metrics": metrics,
        },
        between_files=None if step else lambda: worker.faults.during_save(epochs_done),
    )


def log_epoch(worker: Worker, metrics: dict[str, Any]) -> None:
    """One line of ``metrics.jsonl``, the TensorBoard scalars (copied to the run's storage
    with the epoch's other events), the tracker's (as ``epoch/<metric>``, as TensorBoard
    names them) and one console line."""
    worker.metrics_log.append(metrics)
    step = metrics["epoch"] * worker.method.iters_per_epoch
    if worker.tensorboard is not None:
        worker.tensorboard.epoch(step, metrics)
        worker.tensorboard.sync()
    if worker.tracker is not None:
        worker.tracker.log(step, {f"epoch/{k}": v for k, v in metrics.items()})
        worker.tracker.sync()
    print(f"[adasim] epoch {metrics['epoch']} done: {json.dumps(metrics)}", flush=True)


def report(worker: Worker, metrics: dict[str, Any], ckpt_dir: str | None, epoch: int) -> None:
    """Every rank reports once per epoch; rank 0 hands Ray Train the checkpoint (local mode,
    which keeps none of its own, moves it into the run directory)."""
    report_metrics = {k: v for k, v in metrics.items() if v is not None}
    if ckpt_dir is None:
        ray.train.report(report_metrics)
        return
    try:
        if worker.plan.local_mode:
            keep_checkpoint(ckpt_dir, worker.run_dir, epoch + 1)
            ray.train.report(report_metrics)
        else:
            ray.train.report(report_metrics,
                             checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                             checkpoint_upload_fn=upload_checkpoint)  # retried whole
    finally:  # the staging copy goes, whether the report or the copy worked or not
        shutil.rmtree(Path(ckpt_dir), ignore_errors=True)
    drop_step_checkpoints(worker.run_dir)  # the checkpoints inside the epoch are behind it


def stop_agreed(worker: Worker) -> bool:
    """Whether to stop after this step: any rank's process was sent SIGTERM, or the driver
    asked (rank 0 reads the board). Every rank calls it after the same steps, and all get
    the same answer (the flag's maximum over the ranks, on the host)."""
    asked = stop_requested(worker.board, worker.stop_poll)
    if worker.world == 1 or not dist.is_initialized():
        return asked
    flag = torch.tensor([int(asked)])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=worker.host_group)
    return bool(flag.item())


def report_stop(worker: Worker, stop: PreemptedError) -> dict[str, Any]:
    """Where a run stopped by SIGTERM stopped, its checkpoint written (in
    :func:`train_one_epoch`, marked for the driver); the watchdog stands down."""
    finished()
    return {"stopped_epoch": stop.epoch + 1, "stopped_step": stop.step}


def _barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


def _gather(tensor: torch.Tensor, world: int, group: Any = None) -> torch.Tensor:
    if world == 1 or not dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts)


def host_group(world: int, device: torch.device) -> Any:
    """A gloo process group over all ranks for host tensors (the anchors' ids) when the
    default group is NCCL's (GPU workers); None where the default group takes host tensors.
    Every rank calls it (creating a group is collective)."""
    if world == 1 or not dist.is_initialized() or device.type != "cuda":
        return None
    return dist.new_group(backend="gloo")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")



