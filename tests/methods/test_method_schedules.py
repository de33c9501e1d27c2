"""Per-iteration schedules: length, warm-up end, final value, shape."""

from __future__ import annotations

import numpy as np
import pytest

from adasim_ray.methods.schedules import (
    constant_schedule,
    cosine_schedule,
    scaled_lr,
    teacher_temp_schedule,
)


def test_cosine_schedule_warmup_then_cosine_to_final() -> None:
    values = cosine_schedule(1.0, 0.01, epochs=10, iters_per_epoch=7, warmup_epochs=2,
                             start_warmup_value=0.1)
    assert values.shape == (70,)
    assert values[0] == pytest.approx(0.1)
    assert values[13] == pytest.approx(1.0)  # last warm-up iteration reaches the peak
    assert np.all(np.diff(values[:14]) > 0)
    assert values[14] == pytest.approx(1.0)  # cosine starts at the peak
    assert np.all(np.diff(values[14:]) < 0)
    assert values[-1] == pytest.approx(0.01, abs=1e-12)
    mid = 14 + (70 - 14 - 1) / 2  # the cosine is half-way at its middle
    assert values[int(mid)] > 0.505 > values[int(mid) + 1]


def test_cosine_schedule_can_rise() -> None:
    momentum = cosine_schedule(0.996, 1.0, epochs=3, iters_per_epoch=5)
    assert momentum[0] == pytest.approx(0.996)
    assert momentum[-1] == pytest.approx(1.0)
    assert np.all(np.diff(momentum) > 0)


def test_cosine_schedule_rejects_warmup_longer_than_run() -> None:
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_schedule(1.0, 0.0, epochs=2, iters_per_epoch=3, warmup_epochs=3)


def test_teacher_temperature_warms_up_per_epoch() -> None:
    temps = teacher_temp_schedule(0.07, 0.04, warmup_epochs=4, epochs=6, iters_per_epoch=3)
    assert temps.shape == (18,)
    per_epoch = temps.reshape(6, 3)
    assert np.all(per_epoch == per_epoch[:, :1])  # constant within an epoch
    np.testing.assert_allclose(per_epoch[:, 0], [0.04, 0.05, 0.06, 0.07, 0.07, 0.07])


def test_teacher_temperature_without_warmup_is_constant() -> None:
    temps = teacher_temp_schedule(0.04, 0.01, warmup_epochs=0, epochs=2, iters_per_epoch=2)
    np.testing.assert_allclose(temps, 0.04)


def test_scaled_lr_and_constant() -> None:
    assert scaled_lr(5e-4, 512) == pytest.approx(1e-3)
    assert constant_schedule(0.3, epochs=2, iters_per_epoch=4).tolist() == [0.3] * 8
    with pytest.raises(ValueError):
        scaled_lr(0.05, 0)
