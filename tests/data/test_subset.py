"""Subsets of a class-sorted folder: seeded, stratified, the same in every process; the
demo's data-sized fields stay with the demo's data; native sizes from image headers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adasim_ray.commands.args import config_overrides
from adasim_ray.config import load_config
from adasim_ray.data import DataError, open_source, sample_images, stratified_sample
from adasim_ray.presets import default_config_path
from adasim_ray.recipe import make_views, open_eval_sources, open_train_source


def _class_sorted_folder(root: Path, classes: int, per_class: dict[str, int], side: int = 12,
                         sizes: list[tuple[int, int]] | None = None) -> Path:
    """``root/{train,test}/cNN/*.png``: ``per_class[split]`` images per class."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for c in range(classes):
            for k in range(count):
                w, h = sizes[k % len(sizes)] if sizes else (side, side)
                path = root / split / f"c{c:02d}" / f"{k:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return root


def test_stratified_sample_keeps_every_class_in_proportion():
    labels = np.repeat(np.arange(10), [300, 300, 300, 300, 300, 100, 100, 100, 100, 100])
    picked = stratified_sample(labels, len(labels), 200, seed=3)
    assert len(picked) == 200 and len(np.unique(picked)) == 200
    assert np.all(np.diff(picked) > 0)  # sorted: a class-sorted split stays so
    counts = np.bincount(labels[picked], minlength=10)
    assert counts.tolist() == [30] * 5 + [10] * 5
    # a prefix of the same size would hold the first class or two only
    assert len(np.unique(labels[:200])) == 1


def test_stratified_sample_is_seeded_and_reaches_rare_classes():
    labels = np.repeat(np.arange(5), [1000, 1000, 1000, 1000, 2])
    a = stratified_sample(labels, len(labels), 50, seed=0)
    assert np.array_equal(a, stratified_sample(labels, len(labels), 50, seed=0))
    assert not np.array_equal(a, stratified_sample(labels, len(labels), 50, seed=1))
    assert set(labels[a].tolist()) == {0, 1, 2, 3, 4}  # the 2-image class is not rounded away
    unlabelled = stratified_sample(None, 1000, 10, seed=0)
    assert len(np.unique(unlabelled)) == 10 and unlabelled.max() < 1000


def test_folder_subsets_hold_every_class(tmp_path):
    root = _class_sorted_folder(tmp_path / "imgs", 8, {"train": 25, "test": 10})
    cfg = load_config(None, [f"data=folder:{root}", "limit_images=80", "eval.max_train=40",
                             "eval.max_test=16"])
    train = open_train_source(cfg)
    memory, queries = open_eval_sources(cfg)
    assert np.bincount(train.labels).tolist() == [10] * 8
    assert np.bincount(memory.labels).tolist() == [5] * 8
    assert np.bincount(queries.labels).tolist() == [2] * 8
    # the same images in another process's opening (ranks, resumed runs, fetch tasks)
    again = open_train_source(cfg)
    assert np.array_equal(again.positions, train.positions)
    assert np.array_equal(train.load(5), open_source(f"folder:{root}").load(
        int(train.positions[5])))
    assert train.encoded(0) == open_source(f"folder:{root}").encoded(int(train.positions[0]))
    with pytest.raises(DataError, match="eval.max_test=0"):
        sample_images(queries, 0, setting="eval.max_test")


def test_native_size_from_headers(tmp_path):
    square = _class_sorted_folder(tmp_path / "sq", 2, {"train": 3}, side=20)
    source = open_source(f"folder:{square}")
    assert source.native_size == 20
    cfg = load_config(None, [f"data=folder:{square}"])
    assert make_views(cfg, source).size == 20  # trained at its own size, not 224
    mixed = _class_sorted_folder(tmp_path / "mx", 2, {"train": 3}, sizes=[(20, 20), (24, 24)])
    assert open_source(f"folder:{mixed}").native_size is None
    wide = _class_sorted_folder(tmp_path / "wd", 2, {"train": 2}, sizes=[(30, 20)])
    assert open_source(f"folder:{wide}").native_size is None


def test_demo_sizing_stays_with_the_demo_data(tmp_path, capsys):
    root = _class_sorted_folder(tmp_path / "imgs", 4, {"train": 5, "test": 2})
    # --preset demo on other data (without --preset, such data picks the cpu preset)
    args = argparse.Namespace(set=None, data=f"folder:{root}", config=None, resume=None,
                              preset="demo")
    cfg = load_config(default_config_path(), config_overrides(args))
    assert cfg.limit_images is None and cfg.eval.max_train is None and cfg.eval.max_test is None
    assert tuple(cfg.augment.crop_scale) == (0.25, 1.0)
    assert cfg.epochs == 9 and cfg.backbone == "cnn_tiny_cpu"  # the rest of the demo stays
    assert "limit_images" in capsys.readouterr().out
    args.set = ["limit_images=7"]  # the user's own limit wins
    assert load_config(default_config_path(), config_overrides(args)).limit_images == 7
    demo = argparse.Namespace(set=None, data=None, config=None, resume=None, preset=None)
    assert load_config(default_config_path(), config_overrides(demo)).limit_images == 3000
