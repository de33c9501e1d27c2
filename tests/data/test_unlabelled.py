"""Unlabelled images: a folder of loose images, a nested folder whose sub-folders are not
classes (``labels=False``, the config's ``data_labels: none``), Parquet shards of either, and
the commands that need labels refusing them in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adasim_ray.cli import main
from adasim_ray.config import load_config
from adasim_ray.data import open_source
from adasim_ray.data.convert import convert_folder_to_parquet
from adasim_ray.preflight import preflight


def _nested(root: Path, png_writer) -> list[Path]:
    """Photos by date: 2024/01, 2024/02, 2025/07, not classes; 9 images."""
    rng = np.random.default_rng(0)
    paths = []
    for k, sub in enumerate(["2025/07", "2024/01", "2024/02"]):
        for j in range(3):
            path = root / sub / f"p{j}.png"
            png_writer(path, rng.integers(0, 256, size=(6 + k, 7, 3), dtype=np.uint8))
            paths.append(path)
    return sorted(paths)


def test_a_nested_folder_without_classes_is_one_unlabelled_split(tmp_path, png_writer):
    paths = _nested(tmp_path / "photos", png_writer)
    as_classes = open_source(f"folder:{tmp_path / 'photos'}")
    assert as_classes.num_classes == 2  # its top folders, 2024 and 2025, taken as classes
    source = open_source(f"folder:{tmp_path / 'photos'}", labels=False)
    assert source.labels is None and source.num_classes is None and source.class_names is None
    assert [Path(f) for f in source.files] == paths  # every image below, in path order
    digits = open_source("digits", labels=False)
    assert digits.labels is None and len(digits) == len(open_source("digits"))


def test_prepare_keeps_unlabelled_layouts(tmp_path, png_writer):
    _nested(tmp_path / "photos", png_writer)
    summary = convert_folder_to_parquet(tmp_path / "photos", tmp_path / "pq", labels=False)
    assert summary["splits"]["train"]["images"] == 9
    shards = open_source(f"parquet:{tmp_path / 'pq'}")
    assert shards.labels is None and len(shards) == 9
    loose = tmp_path / "loose"
    for k in range(4):
        png_writer(loose / f"{k}.png", np.full((5, 5, 3), 40 * k, dtype=np.uint8))
    code = main(["prepare", str(loose), str(tmp_path / "pq2")])
    assert code == 0 and open_source(f"parquet:{tmp_path / 'pq2'}").labels is None


def test_unlabelled_training_data_has_no_knn_and_refuses_the_oracle(tmp_path, png_writer):
    _nested(tmp_path / "photos", png_writer)
    cfg = load_config(None, [f"data=folder:{tmp_path / 'photos'}", "data_labels=none",
                             "epochs=2", "batch_size=4", "dino.warmup_epochs=1",
                             "dino.out_dim=32", "adasim.topk=2"])
    found = preflight(cfg)
    assert found.ok and not found.evaluates and found.eval_sources == {}
    assert found.no_eval.startswith("k-NN skipped:")
    oracle = preflight(load_config(None, [f"data=folder:{tmp_path / 'photos'}",
                                          "data_labels=none", "adasim.mode=oracle"]))
    assert [f.message.split(":")[0] for f in oracle.findings] == ["adasim.mode"]
    with_eval = preflight(load_config(None, [f"data=folder:{tmp_path / 'photos'}",
                                             "data_labels=none", "eval_data=digits",
                                             "epochs=2", "dino.warmup_epochs=1"]))
    assert with_eval.evaluates and set(with_eval.eval_sources) == {"train", "test"}


def test_eval_refuses_unlabelled_data_in_one_line(tmp_path, png_writer, capsys):
    for split in ("train", "test"):
        for k in range(3):
            png_writer(tmp_path / "loose" / split / f"{k}.png",
                       np.full((5, 5, 3), 50 * k, dtype=np.uint8))
    code = main(["eval", "--raw-pixels", "--data", f"folder:{tmp_path / 'loose'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "has no labels" in err[0]



def test_a_sample_of_unlabelled_images_is_called_a_random_one(tmp_path, png_writer):
    from adasim_ray.data import describe, sample_images

    paths = _nested(tmp_path, png_writer)
    source = open_source(f"folder:{tmp_path}", labels=False)
    line = describe(sample_images(source, 5, seed=3))
    assert f"5 of {len(paths)} images (random sample, seed 3), unlabelled" in line
    labelled = describe(sample_images(open_source("digits"), 50, seed=3))
    assert "50 of 1438 images (stratified sample, seed 3), 10 classes" in labelled
