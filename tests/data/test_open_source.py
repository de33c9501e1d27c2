"""Spec strings: parsing, dispatch, and the one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from adasim_ray.data import DataError, DataSpec, MnistSource, open_source, parse_spec, sample_images


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mnist", DataSpec("mnist", None)),
        ("digits", DataSpec("digits", None)),
        ("folder:/data/x", DataSpec("folder", "/data/x")),
        ("parquet:rel/dir", DataSpec("parquet", "rel/dir")),
        ("folder:/odd:name", DataSpec("folder", "/odd:name")),  # only the first ':' splits
    ],
)
def test_parse_valid_specs(spec: str, expected: DataSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("imagenet", "unknown data set spec"),
        ("", "unknown data set spec"),
        ("MNIST", "unknown data set spec"),
        ("mnist:/tmp", "takes no path"),
        ("digits:", "takes no path"),
        ("folder:", "missing the path"),
        ("parquet:   ", "missing the path"),
    ],
)
def test_bad_specs_raise_one_line_naming_the_spec(spec: str, fragment: str) -> None:
    with pytest.raises(DataError) as info:
        open_source(spec)
    message = str(info.value)
    assert fragment in message
    assert repr(spec) in message
    assert "\n" not in message


def test_non_string_spec() -> None:
    with pytest.raises(DataError, match="must be a string"):
        parse_spec(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["mnist", "digits"])
def test_unknown_split(spec: str) -> None:
    with pytest.raises(DataError, match="unknown split 'val'"):
        open_source(spec, "val")


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_missing_path_names_it(kind: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="no such directory") as info:
        open_source(f"{kind}:{missing}")
    assert str(missing) in str(info.value)
    assert str(info.value).startswith(f"{kind}:")


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_path_that_is_a_file(kind: str, tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        open_source(f"{kind}:{file}")


def test_dispatch_names_sources(split_folder) -> None:
    source = open_source(f"folder:{split_folder.root}", "test")
    assert source.name == f"folder:{split_folder.root}:test"
    assert open_source("digits", "test").name == "digits:test"


def test_only_digits_change_meaning_when_mirrored(split_folder) -> None:
    folder = open_source(f"folder:{split_folder.root}", "train")
    digits = open_source("digits", "train")
    assert folder.mirror_invariant and not digits.mirror_invariant
    assert not MnistSource.mirror_invariant  # read from the class: no need to load MNIST
    assert not sample_images(digits, 10).mirror_invariant  # a sample keeps its source's
    assert sample_images(folder, 2).mirror_invariant
