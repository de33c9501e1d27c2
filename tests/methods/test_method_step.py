"""train_step: the order of operations, mixed precision, and a DDP-wrapped method."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from adasim_ray.methods import train_step


def test_train_step_sets_scheduled_lr_and_updates_teacher(make_dino, views) -> None:
    dino = make_dino()
    optimizer = dino.build_optimizer()
    teacher_before = [p.clone() for p in dino.teacher.parameters()]
    out = train_step(dino, optimizer, *views, it=3)
    assert out.monitors["lr"] == float(dino.schedules.lr[3])
    changed = [not torch.equal(a, b) for a, b in zip(teacher_before, dino.teacher.parameters(),
                                                     strict=True)]
    assert any(changed)  # after_step ran the EMA


def test_train_step_with_grad_scaler_on_cpu(make_dino, views) -> None:
    dino = make_dino()
    optimizer = dino.build_optimizer()
    scaler = torch.amp.GradScaler("cpu")
    out = train_step(dino, optimizer, *views, it=2, scaler=scaler)
    assert torch.isfinite(out.loss)
    assert out.anchor_feature.dtype == torch.float32


def test_train_step_through_ddp_matches_plain_module(make_dino, views, tmp_path) -> None:
    def run(wrap: bool) -> list[float]:
        torch.manual_seed(0)
        dino = make_dino()
        model = DistributedDataParallel(dino) if wrap else dino
        optimizer = dino.build_optimizer()
        return [train_step(model, optimizer, *views, it).monitors["loss"] for it in range(3)]

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        wrapped = run(wrap=True)  # one rank: the centre all-reduce is a no-op sum
    finally:
        dist.destroy_process_group()
    assert wrapped == run(wrap=False)
