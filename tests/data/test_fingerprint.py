"""The data set fingerprint a resumed run compares with its checkpoint's."""

from __future__ import annotations

import shutil
from pathlib import Path

from adasim_ray.data import fingerprint, open_source, sample_images


def test_the_same_files_anywhere_give_the_same_fingerprint(tmp_path: Path, folder_factory):
    built = folder_factory(tmp_path / "a", {"train": {"x": 30, "y": 30}})
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = fingerprint(open_source(f"folder:{tmp_path / 'a'}"))
    assert fingerprint(open_source(f"folder:{tmp_path / 'b'}")) == first
    # One image among the sampled ones replaced by another of another size: another data set.
    path, _, _ = built.images["train"][0]
    (tmp_path / "b" / path.relative_to(tmp_path / "a")).write_bytes(path.read_bytes() + b"x")
    assert fingerprint(open_source(f"folder:{tmp_path / 'b'}")) != first
    # An image added: N changes.
    shutil.copy(path, tmp_path / "a" / "train" / "y" / "zz.png")
    assert fingerprint(open_source(f"folder:{tmp_path / 'a'}")) != first


def test_in_memory_parquet_and_sampled_sources_have_one(tmp_path: Path, folder_factory):
    from adasim_ray.data import convert_folder_to_parquet

    folder_factory(tmp_path / "f", {"train": {"x": 10, "y": 10}})
    convert_folder_to_parquet(tmp_path / "f", tmp_path / "p")
    digits = open_source("digits")
    prints = {fingerprint(digits), fingerprint(sample_images(digits, 100)),
              fingerprint(open_source(f"parquet:{tmp_path / 'p'}")),
              fingerprint(open_source(f"folder:{tmp_path / 'f'}"))}
    assert len(prints) == 4 and all(len(p) == 16 for p in prints)
    assert fingerprint(open_source("digits")) == fingerprint(digits)
