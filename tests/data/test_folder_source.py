"""Image folders: class ids, deterministic indices, split layouts, corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adasim_ray.data import DataError, FolderSource, open_source


def test_classes_labels_and_pixels(split_folder) -> None:
    source = open_source(f"folder:{split_folder.root}", "train")
    expected = split_folder.images["train"]
    assert source.class_names == ("cat", "dog", "emu")
    assert source.num_classes == 3 and source.channels == 3 and source.native_size is None
    assert len(source) == len(expected) == 7
    names = {"cat": 0, "dog": 1, "emu": 2}
    assert source.labels.tolist() == [names[c] for _, c, _ in expected]
    for i, (path, _, array) in enumerate(expected):
        assert source.files[i] == str(path)
        np.testing.assert_array_equal(source.load(i), array)


def test_index_round_trip(split_folder) -> None:
    source = open_source(f"folder:{split_folder.root}", "train")
    indices = np.array([6, 0, 3])
    for i, image in zip(indices, source.load_many(indices), strict=True):
        np.testing.assert_array_equal(image, source.load(int(i)))
    with pytest.raises(IndexError):
        source.load(7)


def test_test_split_shares_class_ids(split_folder) -> None:
    test = open_source(f"folder:{split_folder.root}", "test")
    # emu is missing from test/, but ids and num_classes follow the union of the splits.
    assert test.class_names == ("cat", "dog", "emu") and test.num_classes == 3
    assert test.labels.tolist() == [0, 0, 1]


def test_val_is_the_test_split(tmp_path: Path, folder_factory) -> None:
    built = folder_factory(tmp_path / "inet", {"train": {"a": 1}, "val": {"a": 2}})
    source = open_source(f"folder:{built.root}", "test")
    assert len(source) == 2
    np.testing.assert_array_equal(source.load(1), built.images["val"][1][2])


def test_single_split_folder(single_folder) -> None:
    source = open_source(f"folder:{single_folder.root}")
    assert source.class_names == ("a", "b") and len(source) == 5
    np.testing.assert_array_equal(source.load(4), single_folder.images["train"][4][2])
    with pytest.raises(DataError, match="single split") as info:
        open_source(f"folder:{single_folder.root}", "test")
    assert str(single_folder.root) in str(info.value)


def test_split_layout_without_test(tmp_path: Path, folder_factory) -> None:
    built = folder_factory(tmp_path / "only_train", {"train": {"a": 1}})
    with pytest.raises(DataError, match="no test/ or val/ sub-folder"):
        open_source(f"folder:{built.root}", "test")


def test_grey_and_jpeg_files_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    (root / "c").mkdir(parents=True)
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(grey, mode="L").save(root / "c" / "a.png")
    Image.fromarray(np.full((6, 5, 3), 200, np.uint8)).save(root / "c" / "b.JPEG")
    (root / "c" / "notes.txt").write_text("not an image")
    source = open_source(f"folder:{root}")
    assert len(source) == 2  # the .txt file is ignored
    rgb = source.load(0)
    assert rgb.shape == (5, 6, 3)
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    jpeg = source.load(1)
    assert jpeg.shape == (6, 5, 3) and np.abs(jpeg.astype(int) - 200).max() <= 2


def test_loose_images_are_unlabelled(tmp_path: Path, png_writer) -> None:
    for k in range(3):
        png_writer(tmp_path / "loose" / f"{k}.png", np.full((4, 4, 3), k, np.uint8))
    source = open_source(f"folder:{tmp_path / 'loose'}")
    assert source.labels is None and source.num_classes is None and len(source) == 3
    assert source.load(2)[0, 0, 0] == 2


def test_mixed_loose_and_class_dirs(tmp_path: Path, png_writer) -> None:
    png_writer(tmp_path / "mix" / "cls" / "a.png", np.zeros((4, 4, 3), np.uint8))
    png_writer(tmp_path / "mix" / "stray.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="mixes loose images"):
        open_source(f"folder:{tmp_path / 'mix'}")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jpg/.jpeg/.png images") as info:
        open_source(f"folder:{tmp_path / 'empty'}")
    assert str(info.value).startswith(f"folder:{tmp_path / 'empty'}:train")


def _corrupt(built, split: str, position: int, how: str) -> Path:
    path = built.images[split][position][0]
    if how == "garbage":
        path.write_bytes(b"this is not a png")
    else:  # a JPEG cut in half: PIL's verify() accepts it, a full decode does not
        rng = np.random.default_rng(3)
        array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(array).save(path, format="JPEG")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_file_raises_naming_it(split_folder, how: str) -> None:
    bad = _corrupt(split_folder, "train", 3, how)
    source = open_source(f"folder:{split_folder.root}", "train")
    assert len(source) == 7  # nothing is checked or dropped at open time by default
    source.load(2)
    with pytest.raises(DataError, match="cannot decode image") as info:
        source.load(3)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError):
        source.load_many([0, 3])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_skip_corrupt_counts_and_keeps_labels_aligned(split_folder, how: str) -> None:
    bad = _corrupt(split_folder, "train", 3, how)
    source = open_source(f"folder:{split_folder.root}", "train", skip_corrupt=True)
    assert source.skipped == (str(bad),)
    assert len(source) == 6
    kept = [entry for k, entry in enumerate(split_folder.images["train"]) if k != 3]
    names = {"cat": 0, "dog": 1, "emu": 2}
    assert source.labels.tolist() == [names[c] for _, c, _ in kept]
    for i, (_, _, array) in enumerate(kept):
        np.testing.assert_array_equal(source.load(i), array)


def test_skip_corrupt_with_clean_folder_skips_nothing(split_folder) -> None:
    source = FolderSource(split_folder.root, "test", skip_corrupt=True)
    assert source.skipped == () and len(source) == 3


def test_everything_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="every image"):
        open_source(f"folder:{tmp_path / 'bad'}", skip_corrupt=True)
