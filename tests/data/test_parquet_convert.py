"""convert_folder_to_parquet: a round trip that keeps every index, label and pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from adasim_ray.data import DataError, ImageSource, convert_folder_to_parquet, open_source


def assert_same(a: ImageSource, b: ImageSource) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.num_classes, a.class_names) == (b.num_classes, b.class_names)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.load(i), b.load(i))


def test_round_trip_split_layout(split_folder, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    summary = convert_folder_to_parquet(split_folder.root, out, rows_per_shard=2)
    assert summary["classes"] == ["cat", "dog", "emu"]
    assert summary["splits"]["train"] == {"images": 7, "shards": 4, "skipped": []}
    assert summary["splits"]["test"] == {"images": 3, "shards": 2, "skipped": []}
    assert summary["shards_written"] == 6
    assert len(list((out / "train").glob("*.parquet"))) == 4
    for split in ("train", "test"):
        assert_same(
            open_source(f"folder:{split_folder.root}", split), open_source(f"parquet:{out}", split)
        )


def test_shards_keep_original_bytes_and_paths(split_folder, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    convert_folder_to_parquet(f"folder:{split_folder.root}", out, rows_per_shard=100)
    table = pq.read_table(out / "test" / "part-00000.parquet")
    path, _, _ = split_folder.images["test"][2]
    assert table.column("image")[2].as_py() == path.read_bytes()
    assert table.column("path")[2].as_py() == str(path.relative_to(split_folder.root))


def test_round_trip_single_split(single_folder, tmp_path: Path) -> None:
    out = tmp_path / "flat_shards"
    summary = convert_folder_to_parquet(single_folder.root, out, rows_per_shard=3)
    assert list(summary["splits"]) == ["train"] and summary["shards_written"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "_adasim_index.pq", "part-00000.parquet", "part-00001.parquet"]
    assert_same(open_source(f"folder:{single_folder.root}"), open_source(f"parquet:{out}"))


def test_val_is_written_as_test(tmp_path: Path, folder_factory) -> None:
    built = folder_factory(tmp_path / "inet", {"train": {"a": 2}, "val": {"a": 1, "b": 1}})
    out = tmp_path / "out"
    convert_folder_to_parquet(built.root, out)
    assert (out / "test").is_dir() and not (out / "val").exists()
    assert_same(open_source(f"folder:{built.root}", "test"), open_source(f"parquet:{out}", "test"))


def test_corrupt_file_fails_before_writing(split_folder, tmp_path: Path) -> None:
    bad = split_folder.images["test"][1][0]
    bad.write_bytes(b"broken")
    out = tmp_path / "shards"
    with pytest.raises(DataError, match="cannot decode image") as info:
        convert_folder_to_parquet(split_folder.root, out)
    assert str(bad) in str(info.value) and "skip_corrupt=True" in str(info.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_skip_corrupt_round_trip(split_folder, tmp_path: Path) -> None:
    bad = split_folder.images["train"][0][0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "shards"
    summary = convert_folder_to_parquet(split_folder.root, out, skip_corrupt=True)
    assert summary["splits"]["train"]["images"] == 6
    assert summary["splits"]["train"]["skipped"] == [str(bad)]
    folder = open_source(f"folder:{split_folder.root}", "train", skip_corrupt=True)
    assert_same(folder, open_source(f"parquet:{out}", "train"))


def test_unlabelled_folder_round_trip(tmp_path: Path, png_writer) -> None:
    for k in range(3):
        png_writer(tmp_path / "loose" / f"{k}.png", np.full((3, 3, 3), 40 * k, np.uint8))
    out = tmp_path / "out"
    summary = convert_folder_to_parquet(tmp_path / "loose", out)
    assert summary["classes"] is None
    source = open_source(f"parquet:{out}")
    assert source.labels is None and np.all(source.load(2) == 80)


def test_refuses_non_empty_output(split_folder, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty directory"):
        convert_folder_to_parquet(split_folder.root, out)
    assert (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    convert_folder_to_parquet(split_folder.root, empty)
    assert (empty / "train" / "part-00000.parquet").is_file()


@pytest.mark.parametrize("rows", [0, -3, 2.5, True])
def test_bad_rows_per_shard(split_folder, tmp_path: Path, rows: object) -> None:
    with pytest.raises(DataError, match="rows_per_shard"):
        convert_folder_to_parquet(split_folder.root, tmp_path / "o", rows_per_shard=rows)  # type: ignore[arg-type]


def test_jpeg_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "jpg" / "c"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(root / "a.jpg")
    out = tmp_path / "out"
    convert_folder_to_parquet(tmp_path / "jpg", out)
    assert_same(open_source(f"folder:{tmp_path / 'jpg'}"), open_source(f"parquet:{out}"))
