"""The paper's pictures (no Ray): Fig. 3 curves from metrics.jsonl, Fig. 1 supports and their
sampling probabilities from a checkpoint's window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adasim_ray.cli import main
from adasim_ray.data import open_source
from adasim_ray.engine import BootstrapConfig, BootstrapShard
from adasim_ray.engine.window import NeighbourWindow
from adasim_ray.figures.neighbours import pick_queries, supports
from adasim_ray.rundir.checkpoint import write_checkpoint
from adasim_ray.visualize.metrics import load_curves, plot_metrics


def _run(root: Path, tau: float, ratios: list[float]) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"data: digits\nadasim:\n  tau: {tau}\n")
    rows = [{"epoch": e + 1, "bootstrap_ratio": r, "nn_top1": 0.9, "nn2_top1": None,
             "knn_top1": 0.5 + 0.1 * e} for e, r in enumerate(ratios)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_metrics_curves_one_line_per_run_labelled_by_what_differs(tmp_path):
    a = _run(tmp_path / "a", 0.2, [0.0, 0.1, 0.3])
    b = _run(tmp_path / "b", 0.5, [0.0, 0.2])
    png = tmp_path / "fig3.png"
    runs = plot_metrics([a, b], png)
    assert png.stat().st_size > 10_000
    assert [r.label for r in runs] == ["tau=0.2", "tau=0.5"]
    assert runs[0].series["bootstrap_ratio"] == [(1, 0.0), (2, 0.1), (3, 0.3)]
    assert runs[1].series["nn2_top1"] == []  # missing values are left out, not drawn as 0
    assert [r.label for r in load_curves([a])] == ["a"]


def test_metrics_of_a_directory_without_metrics_is_one_line(tmp_path, capsys):
    code = main(["visualize", "metrics", str(tmp_path), "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no metrics.jsonl" in err[0]


def _window(start: int = 0, stop: int = 4) -> NeighbourWindow:
    # 4 images, w = 2, K = 3; image 0 ranks itself first in both epochs, image 1 does not;
    # images 2 and 3 are never seen. ``start``/``stop``: the shard of those ids only.
    win = NeighbourWindow(start, stop, window=2, topk=3, sim_dtype="float32")
    for sims0 in ([1.0, 0.9, 0.5], [1.0, 0.7, 0.6]):
        if start == 0:
            win.record(torch.tensor([0]), torch.tensor([[0, 1, 2]]), torch.tensor([sims0]))
            win.record(torch.tensor([1]), torch.tensor([[2, 1, 3]]),
                       torch.tensor([[1.0, 0.8, 0.1]]))
        win.end_epoch()
    return win


def test_support_probabilities_are_algorithm_1s():
    [s0, s1] = supports([_window()], [0, 1], tau=0.5)
    assert s0.ids == [0, 1, 2] and s0.bootstraps
    scores = torch.tensor([2.0, 1.6, 1.1]) / 2  # Eq. 11: summed over the window, / w
    assert s0.scores == pytest.approx(scores.tolist())
    assert s0.probs == pytest.approx(torch.softmax(scores / 0.5, 0).tolist(), abs=1e-6)
    assert sum(s0.probs) == pytest.approx(1.0)
    # image 1 is not its own top neighbour: a standard pair, probability 1 on itself
    assert not s1.bootstraps and s1.ids[0] == 2
    assert s1.probs == [0.0, 1.0, 0.0] and s1.p_other == 0.0
    assert pick_queries([_window()], 0.5, 5) == [0]
    [zero] = supports([_window()], [0], tau=0.0)  # tau = 0: the plain baseline
    assert zero.probs == [1.0, 0.0, 0.0]


def test_supports_over_window_shards_equal_one_window_in_query_order():
    queries = [3, 1, 0, 2, 0]
    split = supports([_window(0, 2), _window(2, 4)], queries, tau=0.5)
    assert [s.query for s in split] == queries
    assert [vars(s) for s in split] == [vars(s) for s in supports([_window()], queries, tau=0.5)]
    assert split[2].bootstraps and split[2].ids == [0, 1, 2] and not split[1].bootstraps


def test_neighbours_picture_of_a_run_directory(tmp_path, capsys):
    n = len(open_source("digits", "train"))
    shard = BootstrapShard(n, 0, n, 16, BootstrapConfig(mode="adasim", tau=0.2, window=2,
                                                        topk=4, cache_dtype="float32"))
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, 16, generator=gen)
    for _ in range(2):
        ids = torch.arange(n)
        top = shard.query_and_write(ids, base + 0.05 * torch.randn(n, 16, generator=gen))
        shard.record(ids, top)
        shard.end_epoch()
    run = tmp_path / "run"
    (run / "checkpoint_000002").mkdir(parents=True)
    (run / "config.yaml").write_text("data: digits\nadasim:\n  tau: 0.2\n  window: 2\n"
                                     "  topk: 4\n")
    write_checkpoint(run / "checkpoint_000002", model_state={}, shard_states=[shard.state_dict()],
                     meta={"epoch": 2, "settings": {"cache_shards": 1}})
    png = tmp_path / "fig1.png"
    code = main(["visualize", "neighbours", str(run), "--output", str(png), "--queries", "3"])
    out = capsys.readouterr().out
    assert code == 0 and png.stat().st_size > 10_000
    assert out.count("[adasim] query ") == 3
    code = main(["visualize", "neighbours", str(run), "--output", str(png), "--ids", f"{n + 5}"])
    assert code == 2 and "outside the run's" in capsys.readouterr().err


def test_the_tensorboard_grid_frames_by_label_and_bars_by_probability():
    import numpy as np

    from adasim_ray.figures.neighbours import GRID_COLOURS, Support, supports_grid

    items = [Support(0, [0, 5, 7], [1.0, 0.9, 0.5], [0.5, 0.25, 0.25], True),
             Support(1, [1], [1.0], [1.0], False)]
    images = {i: np.full((8, 8, 1), 10 * i, np.uint8) for i in (0, 1, 5, 7)}
    labels = {0: 3, 1: 4, 5: 3, 7: 2}
    grid = supports_grid(items, images, labels, tile=16)
    frame, bar_h, gap = 3, 6, 4
    cell_w, cell_h = 16 + 2 * frame, 16 + 2 * frame + bar_h + 2
    assert grid.shape == (gap + 2 * (cell_h + gap), gap + 4 * (cell_w + gap), 3)

    def corner(row, col):
        return tuple(grid[gap + row * (cell_h + gap), gap + col * (cell_w + gap)])

    assert corner(0, 0) == GRID_COLOURS["query"]
    assert corner(0, 2) == GRID_COLOURS["same"] and corner(0, 3) == GRID_COLOURS["other"]
    assert corner(1, 2) == GRID_COLOURS["background"]  # the second query's support is 1 long
    centre = grid[gap + frame + 8, gap + 3 * (cell_w + gap) + frame + 8]
    assert tuple(centre) == (70, 70, 70)  # image 7's grey pixels, repeated to RGB

    def bar(row, col):
        y = gap + row * (cell_h + gap) + 16 + 2 * frame + 2
        x = gap + col * (cell_w + gap)
        return int((grid[y, x: x + cell_w] == GRID_COLOURS["bar"]).all(axis=1).sum())

    assert [bar(0, c) for c in (1, 2, 3)] == [round(0.5 * cell_w), round(0.25 * cell_w),
                                             round(0.25 * cell_w)]
    assert bar(1, 1) == cell_w
