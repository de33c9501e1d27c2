"""Where an image lives, as the audit's CSV columns name it: a folder's file, a Parquet
shard's row (counted across its row groups), a sample's underlying image."""

from __future__ import annotations

import pyarrow.parquet as pq

from adasim_ray.data import convert_folder_to_parquet, open_source, sample_images


def test_a_folder_names_each_image_by_its_file(split_folder):
    source = open_source(f"folder:{split_folder.root}", "train")
    for i, (path, _, _) in enumerate(split_folder.images["train"]):
        assert source.location(i) == {"path": str(path)}


def test_parquet_rows_are_counted_within_their_shard_across_row_groups(folder_factory,
                                                                        tmp_path):
    built = folder_factory(tmp_path / "images", {"train": {"a": 9, "b": 8, "c": 6}})
    out = tmp_path / "pq"
    convert_folder_to_parquet(built.root, out, rows_per_shard=10, rows_per_group=3)
    source = open_source(f"parquet:{out}", "train")
    seen = set()
    for i in range(len(source)):
        where = source.location(i)
        table = pq.read_table(out / "train" / where["shard"], columns=["index"])
        assert table["index"][where["row"]].as_py() == i
        seen.add(where["shard"])
    assert len(seen) == 3  # 23 images in shards of 10: rows of later groups were counted
    sample = sample_images(source, 7, seed=1)
    assert [sample.location(i) for i in range(7)] == [
        source.location(int(p)) for p in sample.positions]
