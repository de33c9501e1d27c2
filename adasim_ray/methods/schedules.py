"""Per-iteration schedules, precomputed once and indexed by the global iteration.

DINO (Caron et al., 2021, Section 3 and its ``cosine_scheduler``) precomputes its learning
rate, weight decay and teacher momentum as arrays of length ``epochs * iters_per_epoch``.
Indexing by the global iteration makes a resumed run exact: no scheduler state to save.

Examples:
    >>> lr = cosine_schedule(5e-4, 1e-6, epochs=100, iters_per_epoch=50, warmup_epochs=10)
    >>> len(lr), float(lr[499]), float(lr[-1])
    (5000, 0.0005, 1e-06)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["constant_schedule", "cosine_schedule", "scaled_lr", "teacher_temp_schedule"]


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule used by DINO and SimSiam: ``lr = base_lr * batch / 256``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return base_lr * batch_size / 256.0


def cosine_schedule(
    base_value: float,
    final_value: float,
    *,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up to ``base_value``, then a half cosine down to ``final_value``.

    Same shape as DINO's ``cosine_scheduler`` with one deliberate difference: the cosine
    reaches ``final_value`` exactly at the last iteration (DINO's stops one step short).

    Args:
        base_value: value at the end of the warm-up (the peak).
        final_value: value at the last iteration.
        epochs: number of epochs; the result has ``epochs * iters_per_epoch`` entries.
        iters_per_epoch: optimiser steps per epoch.
        warmup_epochs: epochs of linear warm-up from ``start_warmup_value``; the warm-up
            ends at ``base_value`` on its last iteration. May be fractional.
        start_warmup_value: first value of the warm-up.

    Returns:
        float64 array of shape ``(epochs * iters_per_epoch,)``.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(
            f"epochs and iters_per_epoch must be >= 1, got {epochs} and {iters_per_epoch}"
        )
    total = epochs * iters_per_epoch
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    if not 0 <= warmup_iters <= total:
        raise ValueError(f"warmup_epochs={warmup_epochs} must lie in [0, epochs={epochs}]")
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    n = total - warmup_iters
    steps = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1.0 + np.cos(math.pi * steps))
    return np.concatenate([warmup, cosine])


def constant_schedule(value: float, *, epochs: int, iters_per_epoch: int) -> np.ndarray:
    """``value`` at every iteration (SimSiam's weight decay, a fixed predictor lr)."""
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(
            f"epochs and iters_per_epoch must be >= 1, got {epochs} and {iters_per_epoch}"
        )
    return np.full(epochs * iters_per_epoch, value, dtype=np.float64)


def teacher_temp_schedule(
    teacher_temp: float,
    warmup_teacher_temp: float,
    *,
    warmup_epochs: int,
    epochs: int,
    iters_per_epoch: int,
) -> np.ndarray:
    """DINO's teacher temperature: linear per epoch from ``warmup_teacher_temp`` to
    ``teacher_temp`` over ``warmup_epochs``, then constant; expanded per iteration.

    DINO indexes this schedule by epoch, so the value is constant within an epoch; it is
    repeated here so that every schedule is indexed the same way (by global iteration).
    A low start (e.g. 0.04 rising to 0.07) sharpens the teacher early, which DINO's
    authors recommend against early collapse.
    """
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"warmup_teacher_temp_epochs={warmup_epochs} must lie in "
                         f"[0, epochs={epochs}]")
    per_epoch = np.concatenate([
        np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
        np.full(epochs - warmup_epochs, teacher_temp),
    ])
    return np.repeat(per_epoch, iters_per_epoch)
