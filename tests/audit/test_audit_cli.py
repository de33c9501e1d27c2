"""``launch.py audit``: bad inputs end in one line and exit code 2."""

from __future__ import annotations

from adasim_ray.cli import main


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_missing_run_directory(capsys, tmp_path):
    assert "not found" in _one_line_error(capsys, ["audit", str(tmp_path / "nope")])


def test_not_a_run_directory(capsys, tmp_path):
    assert "no config.yaml" in _one_line_error(capsys, ["audit", str(tmp_path)])


def test_run_without_checkpoint(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("data: digits\n")
    assert "no complete checkpoint" in _one_line_error(capsys, ["audit", str(tmp_path)])


def test_bad_top(capsys, tmp_path):
    assert "--top" in _one_line_error(capsys, ["audit", str(tmp_path), "--top", "0"])
