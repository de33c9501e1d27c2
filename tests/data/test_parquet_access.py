"""Parquet at scale: opening from the index file, row groups read on demand through a bounded
cache, old and hand-made shards, and the same data on a real S3 API (moto, 127.0.0.1)."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from adasim_ray.data import DataError, ParquetSource, convert_folder_to_parquet, open_source
from adasim_ray.data.convert import write_index
from adasim_ray.data.parquet_index import INDEX_FILE


@pytest.fixture
def sorted_folder(tmp_path: Path, folder_factory):
    """A class-sorted folder: 4 classes x 10 train images, 4 x 3 test images."""
    return folder_factory(tmp_path / "imgs", {
        "train": {c: 10 for c in "abcd"}, "test": {c: 3 for c in "abcd"}})


@pytest.fixture
def shards(sorted_folder, tmp_path: Path) -> Path:
    out = tmp_path / "pq"
    convert_folder_to_parquet(sorted_folder.root, out, rows_per_shard=16)
    return out


def flat_png(i: int) -> bytes:
    """A 6 x 6 PNG of value 10 * i (mod 256)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), 10 * i % 256, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_same(a, b) -> None:
    assert len(a) == len(b) and a.num_classes == b.num_classes
    np.testing.assert_array_equal(a.labels, b.labels)
    order = np.random.default_rng(0).permutation(len(a))  # random access, as the fetch does
    for i, image in zip(order.tolist(), b.load_many(order), strict=True):
        np.testing.assert_array_equal(a.load(i), image)


def test_prepare_writes_small_row_groups_and_an_index_the_source_opens_from(
        sorted_folder, shards):
    meta = pq.read_metadata(shards / "train" / "part-00000.parquet")
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [8, 8]
    assert (shards / "train" / INDEX_FILE).is_file() and (shards / "test" / INDEX_FILE).is_file()
    source = open_source(f"parquet:{shards}")
    assert source.indexed and source.reads == 0  # opened without reading one image
    assert source.native_size == open_source(f"folder:{sorted_folder.root}").native_size
    assert_same(open_source(f"folder:{sorted_folder.root}"), source)
    assert_same(open_source(f"folder:{sorted_folder.root}", "test"),
                open_source(f"parquet:{shards}", "test"))


def test_prepared_shards_are_read_one_byte_range_an_image(shards):
    source = open_source(f"parquet:{shards}")
    assert source.byte_ranges
    table = pq.read_table(shards / "train" / "part-00001.parquet")
    assert source.encoded_many([17, 16]) == [table.column("image")[k].as_py() for k in (1, 0)]
    assert source.reads == 2 and source.cached_bytes == 0


def test_other_layouts_get_no_byte_ranges(shards, tmp_path: Path):
    copy = tmp_path / "zstd"
    copy.mkdir()
    for part in sorted((shards / "train").glob("*.parquet")):
        pq.write_table(pq.read_table(part), copy / part.name, compression="zstd",
                       row_group_size=8)
    assert write_index(copy, "parquet:test") == 5  # an index file, without byte ranges
    source = open_source(f"parquet:{copy}")
    assert source.indexed and not source.byte_ranges
    assert_same(open_source(f"parquet:{shards}"), source)


def row_group_shards(shards: Path) -> Path:
    """The shards without their index file: read a row group at a time."""
    (shards / "train" / INDEX_FILE).unlink()
    return shards


def test_each_row_group_is_read_once_when_the_cache_holds_them(shards):
    source = open_source(f"parquet:{row_group_shards(shards)}")
    assert not source.byte_ranges
    source.load_many(np.random.default_rng(1).permutation(len(source)))
    source.load_many(np.arange(len(source)))
    assert source.reads == 5  # 40 images in groups of 8, 8 | 8, 8 | 8


def test_the_cache_stays_within_its_bound(shards):
    row_group_shards(shards)
    one_group = ParquetSource(shards)
    one_group.load(0)
    group_bytes = one_group.cached_bytes
    source = ParquetSource(shards, cache_bytes=2 * group_bytes)
    rng = np.random.default_rng(2)
    for _ in range(30):
        source.load_many(rng.choice(len(source), 3, replace=False))
        assert source.cached_bytes <= 2 * group_bytes
    assert source.reads > 5  # groups were evicted and read again


def test_a_stale_index_file_is_passed_over(shards, caplog):
    part = shards / "train" / "part-00001.parquet"
    pq.write_table(pq.read_table(part), part, row_group_size=3)  # same rows, new size
    with caplog.at_level(logging.WARNING):
        source = open_source(f"parquet:{shards}")
    assert not source.indexed
    assert "describes other shards" in caplog.text
    folder = pq.read_table(shards / "train" / "part-00000.parquet").column("image")
    assert source.encoded(3) == folder[3].as_py()


def test_shards_with_shuffled_rows_in_small_groups(tmp_path: Path):
    indices = np.random.default_rng(3).permutation(20)
    table = pa.table({"index": pa.array(indices, pa.int64()),
                      "image": pa.array([flat_png(int(i)) for i in indices], pa.binary()),
                      "label": pa.array(indices % 4, pa.int64())})
    (tmp_path / "s").mkdir()
    pq.write_table(table, tmp_path / "s" / "x.parquet", row_group_size=3)
    source = open_source(f"parquet:{tmp_path / 's'}")
    assert source.labels.tolist() == [i % 4 for i in range(20)]
    for i, image in zip(range(20), source.load_many(np.arange(20)[::-1]), strict=True):
        assert image[0, 0, 0] == (19 - i) * 10
    assert write_index(tmp_path / "s", "parquet:test") == 0  # no index for such groups


def test_large_row_groups_open_with_a_warning(tmp_path: Path, caplog):
    table = pa.table({"index": pa.array(range(100), pa.int64()),
                      "image": pa.array([flat_png(i) for i in range(100)], pa.binary())})
    (tmp_path / "s").mkdir()
    pq.write_table(table, tmp_path / "s" / "x.parquet")
    with caplog.at_level(logging.WARNING):
        source = open_source(f"parquet:{tmp_path / 's'}")
    assert "row groups of 100 images" in caplog.text and "adasim-ray prepare" in caplog.text
    assert source.load(42)[0, 0, 0] == 420 % 256


def test_a_source_pickles_without_its_cache(shards):
    source = open_source(f"parquet:{shards}")
    image = source.load(7)
    copy = pickle.loads(pickle.dumps(source))
    assert copy.reads == 0 and copy.cached_bytes == 0
    np.testing.assert_array_equal(copy.load(7), image)


def test_the_same_data_on_s3(s3_server, sorted_folder, shards):
    bucket = s3_server.bucket()
    s3_server.upload(shards, f"{bucket}/imagenet")
    source = open_source(f"parquet:{s3_server.uri(bucket + '/imagenet')}")
    assert source.indexed and source.reads == 0
    assert_same(open_source(f"parquet:{shards}"), source)
    test = open_source(f"parquet:{s3_server.uri(bucket + '/imagenet')}", "test")
    assert len(test) == 12


def test_missing_bucket_path_and_shard_on_s3_are_one_line(s3_server, shards):
    with pytest.raises(DataError, match="no such directory") as missing:
        open_source(f"parquet:{s3_server.uri('no-such-bucket/data')}")
    assert "\n" not in str(missing.value)
    bucket = s3_server.bucket()
    with pytest.raises(DataError, match="no such directory"):
        open_source(f"parquet:{s3_server.uri(bucket + '/nothing-here')}")
    s3_server.upload(shards, f"{bucket}/d")
    source = open_source(f"parquet:{s3_server.uri(bucket + '/d')}", cache_mb=1)
    s3_server.filesystem().delete_file(f"{bucket}/d/train/part-00001.parquet")
    with pytest.raises(DataError, match="cannot read shard part-00001.parquet") as gone:
        source.load(20)
    assert "\n" not in str(gone.value)
