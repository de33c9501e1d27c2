"""One optimisation step, shared by every method: the protocol a method implements and
``train_step``, the only training loop body the Ray layer needs.

A step of AdaSim (Algorithm 1, lines 5-21) with the partner j* already chosen is the base
method's step on the pair (t(x_i), t'(x_j*)) plus one output: the anchor feature z_i that the
similarity cache stores. The order follows DINO's ``train_one_epoch``: set the scheduled
lr / weight decay, forward, backward, clip, cancel the frozen last layer's gradients,
optimiser step, EMA update of the teacher.

Examples:
    >>> out = train_step(method, optimizer, anchor, partner, it)  # doctest: +SKIP
    >>> cache.write(indices, out.anchor_feature)                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Method", "StepOutput", "monitors_to_host", "schedule_at", "train_step"]


@dataclass
class StepOutput:
    """What one step returns.

    Attributes:
        loss: the scalar training loss (with its graph until ``backward``).
        anchor_feature: (B, feat_dim) float32, detached: the backbone feature of the anchor
            view t(x_i) (DINO: teacher backbone; SimSiam: the encoder, without gradient).
            This is what the similarity cache stores; never the partner's feature.
        monitors: what to log: ``loss``, ``z_std`` and method-specific ones; 0-dim tensors
            as a method's ``forward`` returns them (no host synchronisation), floats after
            :func:`monitors_to_host` (``train_step`` and ``step`` return those).
    """

    loss: torch.Tensor
    anchor_feature: torch.Tensor
    monitors: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    """What ``train_step`` and the Ray layer need from a self-distillation method
    (``methods/base.py`` implements all but the method's own ``forward``, optimiser and
    encoders).

    ``forward(anchor, partner, it)`` (so that a ``DistributedDataParallel`` wrapper
    synchronises gradients) is the same as ``step(anchor, partner, it)``. ``monitors``
    names the step's monitors that the Ray layer logs; ``encoders()`` gives the backbones by
    role (``methods/roles.py``); ``state_bytes()`` sizes the method's checkpoint.
    """

    feat_dim: int
    iters_per_epoch: int
    total_iters: int
    monitors: tuple[str, ...]

    def __call__(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
                 it: int) -> StepOutput: ...

    def step(self, anchor_view: torch.Tensor, partner_view: torch.Tensor,
             it: int) -> StepOutput: ...

    def build_optimizer(self) -> torch.optim.Optimizer: ...

    def apply_schedules(self, optimizer: torch.optim.Optimizer, it: int) -> None: ...

    def prepare_gradients(self, it: int) -> None: ...

    def after_step(self, it: int) -> None: ...

    def eval_backbone(self) -> nn.Module: ...

    def encoders(self) -> dict[str, nn.Module]: ...

    def state_bytes(self) -> int: ...


def schedule_at(values: np.ndarray, it: int, name: str) -> float:
    """``values[it]`` as a float, with an error that says which schedule ran out."""
    if not 0 <= it < len(values):
        raise IndexError(f"iteration {it} is outside the {name} schedule of {len(values)} "
                         "iterations (epochs x iters_per_epoch); was the method built for "
                         "this many epochs?")
    return float(values[it])


def monitors_to_host(out: StepOutput, it: int, method: nn.Module) -> StepOutput:
    """The monitors of a forward pass as floats, in one host synchronisation (a
    ``torch.stack`` and a ``tolist``, instead of one ``float()`` per monitor), and the loss
    checked: a NaN / inf loss stops the run before the optimiser applies it (DINO exits too).

    Raises:
        FloatingPointError: the loss is not finite, naming the iteration and the epoch.
    """
    names = [k for k, v in out.monitors.items() if isinstance(v, torch.Tensor)]
    host = dict(out.monitors)
    if names:
        values = torch.stack([out.monitors[k].detach().float().reshape(()) for k in names])
        host.update(zip(names, values.tolist(), strict=True))
    loss = float(host["loss"])
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{type(method).__name__} loss is {loss} at iteration {it} (epoch "
            f"{it // method.iters_per_epoch}): training diverged; lower the learning rate, "
            "raise the warm-up, or check the input images"
        )
    return StepOutput(out.loss, out.anchor_feature, host)


def _unwrap(method: nn.Module) -> Method:
    return method.module if isinstance(method, DistributedDataParallel) else method  # type: ignore[return-value]


def train_step(
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    anchor_view: torch.Tensor,
    partner_view: torch.Tensor,
    it: int,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> StepOutput:
    """One full optimisation step at global iteration ``it``.

    Args:
        method: a ``DINO`` or ``SimSiam`` (or a ``DistributedDataParallel`` wrapping one).
        optimizer: from ``method.build_optimizer()``.
        anchor_view: t(x_i), (B, C, S, S).
        partner_view: t'(x_j*), (B, C, S, S); j* = i for a standard positive pair.
        it: global iteration (epoch * iters_per_epoch + step), indexes every schedule.
        scaler: a GradScaler, for float16 mixed precision (loss scaling); None without.
        amp_dtype: autocast the forward pass to this dtype on the views' device (float16
            with a scaler, bfloat16 without one); None trains in float32 (float16 when only
            a scaler is given).

    Returns:
        The method's ``StepOutput``; ``monitors`` also holds the ``lr`` used.

    Raises:
        FloatingPointError: if the loss is not finite.
    """
    core = _unwrap(method)
    core.apply_schedules(optimizer, it)
    optimizer.zero_grad(set_to_none=True)
    if amp_dtype is None and scaler is not None:
        amp_dtype = torch.float16
    autocast = (torch.autocast(device_type=anchor_view.device.type, dtype=amp_dtype)
                if amp_dtype is not None else contextlib.nullcontext())
    with autocast:
        out: StepOutput = method(anchor_view, partner_view, it)
    out = monitors_to_host(out, it, core)  # the step's one host synchronisation
    if scaler is None:
        out.loss.backward()
        core.prepare_gradients(it)
        optimizer.step()
    else:
        scaler.scale(out.loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        core.prepare_gradients(it)
        scaler.step(optimizer)
        scaler.update()
    core.after_step(it)
    out.monitors["lr"] = float(optimizer.param_groups[0]["lr"])
    return out
