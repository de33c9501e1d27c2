"""The Ray Train worker loop: DDP pretraining with AdaSim partners and the sharded cache.

Per epoch (Algorithm 1 with the plan of past epochs, see ``adasim_ray.engine.partners``):

1. rank 0 publishes the epoch's partner plan (computed by the cache shards at the end of the
   previous epoch) on the plan board; all ranks meet at a barrier;
2. every rank iterates its own Ray Data stream of (t(x_i), t'(x_j*)) pairs and takes DDP steps;
   after each step the anchors' teacher features are gathered and rank 0 sends them to the
   cache shards without waiting (query before write, then record the top-K);
3. rank 0 closes the epoch in the shards (window slot, next plan), runs the online k-NN,
   writes the checkpoint (model, optimiser, schedules' position, RNG, and the cache shards,
   once) and every rank calls ``ray.train.report`` once.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from adasim_ray.config import config_from_dict
from adasim_ray.methods import train_step
from adasim_ray.recipe import (
    build_model,
    knn_evaluation,
    make_views,
    open_eval_sources,
    open_train_source,
)
from adasim_ray.train.cache_actor import ShardedCache
from adasim_ray.train.checkpoint import (
    keep_local_checkpoint,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from adasim_ray.train.faults import FaultInjector, parse_faults, record_resume
from adasim_ray.train.hooks import quiet_ray_console
from adasim_ray.train.pipeline import plan_board_name
from adasim_ray.train.rundir import MetricsLog


def _barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


def _gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1 or not dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Entry point of each Train worker (``TorchTrainer(train_loop_per_worker=...)``)."""
    cfg = config_from_dict(loop_config["config"])
    run_name: str = loop_config["run_name"]
    num_images: int = loop_config["num_images"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    # As many torch threads as CPUs reserved, whatever imported torch first in this process:
    # a thread count that differs between launches changes the float sums (measured: the
    # same run driven in-process or from `launch.py` differed by 3e-7 in the first loss).
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    log_every = int(loop_config.get("log_every", 20))
    quiet_ray_console()  # the run prints its own progress and per-epoch metrics

    source = open_train_source(cfg)
    views = make_views(cfg, source)
    method = build_model(cfg, views, num_images, world)
    optimizer = method.build_optimizer()
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    model = ray.train.torch.prepare_model(method)

    cache = board = faults = None
    if rank == 0 and loop_config.get("faults"):
        faults = FaultInjector(parse_faults(loop_config["faults"]), loop_config["run_dir"],
                               loop_config.get("driver_pid"))
    if rank == 0:
        cache = ShardedCache.by_name(run_name, cfg.ray.cache_shards, cfg.adasim.topk)
        board = ray.get_actor(plan_board_name(run_name))
    start_epoch, plan_metrics = 0, {"bootstrap_ratio": 0.0, "nn_top1": None, "nn2_top1": None}
    local_mode = bool(loop_config.get("local_mode"))
    checkpoint = ray.train.get_checkpoint()
    local_ckpt = _newest_local_checkpoint(loop_config["run_dir"])
    if checkpoint is not None or local_ckpt is not None:
        if local_ckpt is not None:
            meta, state, shard_states = read_checkpoint(local_ckpt)
        else:
            with checkpoint.as_directory() as directory:
                meta, state, shard_states = read_checkpoint(directory)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch, plan_metrics = int(meta["epoch"]), meta["plan_metrics"]
        if cache is not None:
            cache.load_states(shard_states)
        del shard_states
        if rank == 0:
            print(f"[adasim] resumed from checkpoint at epoch {start_epoch}", flush=True)
            record_resume(loop_config["run_dir"], start_epoch)
    elif cache is not None:
        cache.reset()  # a restarted shard actor, or a fresh run: start empty

    metrics_log = MetricsLog(loop_config["run_dir"]) if rank == 0 else None
    if metrics_log is not None:
        metrics_log.truncate(start_epoch)  # epochs after the checkpoint are redone
    writer = None
    if rank == 0 and loop_config.get("tensorboard_dir"):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(loop_config["tensorboard_dir"])
    eval_sources = open_eval_sources(cfg) if rank == 0 else None
    iters = method.iters_per_epoch
    per_rank_batch = cfg.batch_size // max(world, 1)
    last: dict[str, Any] = {}

    for epoch in range(start_epoch, cfg.epochs):
        epoch_t0 = time.perf_counter()
        if rank == 0:
            plan_ref = ray.put(cache.partners())
            ray.get(board.publish.remote(epoch, [plan_ref]))
        _barrier(world)
        stream = ray.train.get_dataset_shard(f"train_{rank}").iter_torch_batches(
            batch_size=per_rank_batch, drop_last=False, prefetch_batches=2
        )
        losses, z_stds, entropies, lr = [], [], [], float("nan")
        step, images, steady_t0, steady_images = 0, 0, None, 0
        first_batch_s = float("nan")
        model.train()
        for batch in stream:
            it = epoch * iters + step
            if faults is not None:
                faults.at_step(it, cache.handles)
            anchor = batch["anchor"].to(device, non_blocking=True)
            partner = batch["partner"].to(device, non_blocking=True)
            out = train_step(model, optimizer, anchor, partner, it, scaler)
            ids = _gather(batch["anchor_id"].to(device), world)
            feats = _gather(out.anchor_feature.float(), world)
            if cache is not None:
                cache.submit(ids.cpu().numpy(), feats.cpu().numpy())
            losses.append(out.monitors["loss"])
            z_stds.append(out.monitors.get("z_std", float("nan")))
            if "teacher_entropy" in out.monitors:
                entropies.append(out.monitors["teacher_entropy"])
            lr = out.monitors["lr"]
            step += 1
            images += len(anchor) * world
            if step == 1:  # throughput from the second step on: start-up reported apart
                steady_t0, steady_images = time.perf_counter(), images
                first_batch_s = steady_t0 - epoch_t0
            if rank == 0 and (step % log_every == 0 or step == iters):
                rate = (images - steady_images) / max(time.perf_counter() - steady_t0, 1e-9)
                print(
                    f"[adasim] epoch {epoch + 1}/{cfg.epochs} step {step}/{iters} "
                    f"{rate:.0f} img/s loss {losses[-1]:.4f} "
                    f"bootstrap {plan_metrics['bootstrap_ratio']:.3f}",
                    flush=True,
                )
        train_s = time.perf_counter() - epoch_t0
        steady_s = time.perf_counter() - steady_t0 if steady_t0 else float("nan")
        images_per_s = (images - steady_images) / steady_s if step > 1 else float("nan")
        if step != iters:
            raise RuntimeError(f"epoch {epoch}: ran {step} steps, the schedules expect {iters}")

        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": _mean(losses),
            "z_std": _mean(z_stds),
            "teacher_entropy": _mean(entropies) if entropies else None,
            "lr": lr,
            "images_per_s": images_per_s,
            "train_s": train_s,
            "first_batch_s": first_batch_s,
            **{k: plan_metrics[k] for k in ("bootstrap_ratio", "nn_top1", "nn2_top1")},
        }
        ckpt_dir = None
        if rank == 0:
            next_plan = cache.end_epoch()
            metrics["knn_top1"] = None
            final = epoch + 1 == cfg.epochs
            if final or (cfg.eval.knn_every and (epoch + 1) % cfg.eval.knn_every == 0):
                result = knn_evaluation(
                    method.eval_backbone(), cfg, eval_sources, views, final=final, device=device
                )
                metrics["knn_top1"] = result["knn_top1"]
                if final:
                    metrics.update(
                        {
                            k: result[k]
                            for k in ("knn_top5", "linear_top1", "fewshot_mean", "fewshot_ci95")
                        }
                    )
            metrics["cache_busy_s"] = cache.busy_seconds()
            metrics["wall_s"] = time.perf_counter() - epoch_t0
            if final or (epoch + 1) % cfg.checkpoint_every == 0:
                ckpt_dir = tempfile.mkdtemp(prefix="adasim-ckpt-")
                write_checkpoint(
                    ckpt_dir,
                    model_state={
                        "model": method.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "rng": torch.get_rng_state(),
                        "it": (epoch + 1) * iters,
                    },
                    shard_states=cache.states(),
                    meta={
                        "epoch": epoch + 1,
                        "settings": loop_config["settings"],
                        "plan_metrics": next_plan,
                        "metrics": metrics,
                    },
                    between_files=None if faults is None
                    else lambda e=epoch + 1: faults.during_save(e),
                )
            metrics_log.append(metrics)
            if writer is not None:
                for key, value in metrics.items():
                    if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                        writer.add_scalar(f"train/{key}", value, epoch + 1)
                writer.flush()
            print(f"[adasim] epoch {epoch + 1} done: {json.dumps(metrics)}", flush=True)
            plan_metrics = next_plan
        report_metrics = {k: v for k, v in metrics.items() if v is not None}
        if ckpt_dir is not None and local_mode:
            # Local mode (num_workers=0) keeps no checkpoints of its own: persist it here.
            keep_local_checkpoint(ckpt_dir, loop_config["run_dir"], epoch + 1)
            ray.train.report(report_metrics)
        elif ckpt_dir is not None:
            ray.train.report(
                report_metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir)
            )
            _remove_tree(ckpt_dir)
        else:
            ray.train.report(report_metrics)
        last = metrics
        if loop_config.get("stop_after") is not None and epoch + 1 >= loop_config["stop_after"]:
            break
    if writer is not None:
        writer.close()
    return last


def _newest_local_checkpoint(run_dir: str) -> Path | None:
    """The newest complete checkpoint of a run on local storage (Ray Train's and local mode's
    both live in the run directory). Preferred to the one Ray Train hands back: a worker
    killed hard can lose the checkpoint it reported within the controller's last poll,
    though its files are complete on disk. None for cloud storage (Ray's is used)."""
    return None if "://" in run_dir else latest_checkpoint(run_dir)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(Path(path), ignore_errors=True)
