"""Parquet shards: index order, validation of the index column, labels, corrupt rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from adasim_ray.data import DataError, ParquetSource, open_source


def png_bytes(value: int, size: tuple[int, int] = (4, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(
    path: Path,
    indices: list[int],
    labels: list[int | None] | None = None,
    *,
    drop: str | None = None,
    metadata: dict | None = None,
) -> None:
    """A shard whose image for index ``i`` is a flat image of value ``10 * i`` (mod 256)."""
    columns = {
        "index": pa.array(indices, pa.int64()),
        "image": pa.array([png_bytes(10 * i % 256) for i in indices], pa.binary()),
    }
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    if drop is not None:
        del columns[drop]
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata({"adasim_ray": json.dumps(metadata)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_rows_sorted_by_index_across_shards(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "b.parquet", [4, 0, 2], [1, 0, 1])
    write_shard(tmp_path / "s" / "a.parquet", [3, 1], [0, 2])
    source = open_source(f"parquet:{tmp_path / 's'}")
    assert len(source) == 5 and source.channels == 3
    assert source.labels.tolist() == [0, 2, 1, 0, 1]
    assert source.num_classes == 3 and source.class_names is None
    for i in range(5):
        image = source.load(i)
        assert image.shape == (4, 5, 3) and image.dtype == np.uint8
        assert np.all(image == 10 * i)
        np.testing.assert_array_equal(image, source.load_many([i])[0])
    with pytest.raises(IndexError):
        source.load(5)


def test_split_layout_and_class_metadata(tmp_path: Path) -> None:
    meta = {"classes": ["ant", "bee", "cow"]}
    write_shard(tmp_path / "d" / "train" / "p.parquet", [0, 1], [0, 1], metadata=meta)
    write_shard(tmp_path / "d" / "test" / "p.parquet", [0], [0], metadata=meta)
    test = open_source(f"parquet:{tmp_path / 'd'}", "test")
    assert len(test) == 1 and test.num_classes == 3 and test.class_names == ("ant", "bee", "cow")


def test_missing_index_column(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "x.parquet", [0, 1], drop="index")
    with pytest.raises(DataError, match="shard x.parquet is missing the 'index' column"):
        open_source(f"parquet:{tmp_path / 's'}")


def test_missing_image_column(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "x.parquet", [0, 1], drop="image")
    with pytest.raises(DataError, match="missing the 'image' column"):
        open_source(f"parquet:{tmp_path / 's'}")


def test_duplicate_index_across_shards(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "a.parquet", list(range(0, 18)))
    write_shard(tmp_path / "s" / "b.parquet", [17, 18])
    with pytest.raises(DataError, match="duplicate index 17 in shards a.parquet and b.parquet"):
        open_source(f"parquet:{tmp_path / 's'}")


def test_duplicate_index_within_a_shard(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "a.parquet", [0, 1, 1, 2])
    with pytest.raises(DataError, match="duplicate index 1 in shard a.parquet"):
        open_source(f"parquet:{tmp_path / 's'}")


@pytest.mark.parametrize(
    ("indices", "fragment"),
    [([0, 1, 3], "index 2 is missing"), ([1, 2], "index 0 is missing"), ([0, -1], "negative")],
)
def test_indices_must_be_exactly_0_to_n(tmp_path: Path, indices: list[int], fragment: str) -> None:
    write_shard(tmp_path / "s" / "a.parquet", indices)
    with pytest.raises(DataError, match=fragment):
        open_source(f"parquet:{tmp_path / 's'}")


def test_null_index(tmp_path: Path) -> None:
    table = pa.table(
        {"index": pa.array([0, None], pa.int64()), "image": pa.array([b"x", b"y"], pa.binary())}
    )
    (tmp_path / "s").mkdir()
    pq.write_table(table, tmp_path / "s" / "n.parquet")
    with pytest.raises(DataError, match="null index"):
        open_source(f"parquet:{tmp_path / 's'}")


def test_labels_all_null_or_absent_mean_unlabelled(tmp_path: Path) -> None:
    write_shard(tmp_path / "a" / "x.parquet", [0, 1], [None, None])
    write_shard(tmp_path / "b" / "x.parquet", [0, 1])
    for name in ("a", "b"):
        source = open_source(f"parquet:{tmp_path / name}")
        assert source.labels is None and source.num_classes is None


def test_partly_null_labels(tmp_path: Path) -> None:
    write_shard(tmp_path / "s" / "x.parquet", [0, 1], [None, 3])
    with pytest.raises(DataError, match="label is null for index 0"):
        open_source(f"parquet:{tmp_path / 's'}")


def test_no_shards_and_unreadable_shard(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match=r"no \*\.parquet shards"):
        open_source(f"parquet:{tmp_path / 'none'}")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "j.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read shard j.parquet"):
        open_source(f"parquet:{tmp_path / 'junk'}")


def _with_corrupt_row(path: Path) -> None:
    table = pa.table(
        {
            "index": pa.array([0, 1, 2], pa.int64()),
            "image": pa.array([png_bytes(0), b"garbage", png_bytes(20)], pa.binary()),
            "label": pa.array([0, 1, 2], pa.int64()),
        }
    )
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)


def test_corrupt_row_raises_naming_shard_and_index(tmp_path: Path) -> None:
    _with_corrupt_row(tmp_path / "s" / "c.parquet")
    source = open_source(f"parquet:{tmp_path / 's'}")
    source.load(2)
    with pytest.raises(DataError, match="shard c.parquet row index 1: cannot decode image"):
        source.load(1)


def test_skip_corrupt_renumbers_and_lists(tmp_path: Path) -> None:
    _with_corrupt_row(tmp_path / "s" / "c.parquet")
    source = ParquetSource(tmp_path / "s", skip_corrupt=True)
    assert source.skipped == ("c.parquet#index=1",)
    assert len(source) == 2 and source.labels.tolist() == [0, 2]
    assert np.all(source.load(1) == 20)
