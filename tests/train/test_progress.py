"""The progress lines of a run: the time left in the epoch and in the run."""

from __future__ import annotations


def test_progress_lines_carry_the_time_left():
    from adasim_ray.train.loop import eta_text

    # 40 steps left at 0.5 s; 2 more epochs of 50 steps plus the 2 s wait for a first batch
    assert eta_text(10, 50, 0.5, epoch=0, epochs=3, first_batch_s=2.0) == (
        "eta epoch 0:20, run 1:14")
    assert eta_text(47, 47, 0.25, epoch=8, epochs=9, first_batch_s=float("nan")) == (
        "eta epoch 0:00, run 0:00")
    assert eta_text(1, 1000, 5.0, epoch=0, epochs=100, first_batch_s=3.0).endswith(
        "run 138:58:12")
