"""What makes a directory a run directory, decided in one place."""

from __future__ import annotations

import pytest

from adasim_ray.errors import ConfigError, UserError
from adasim_ray.rundir.layout import is_run_dir, require_run_dir


def test_a_run_directory_is_one_with_config_yaml(tmp_path):
    assert not is_run_dir(tmp_path) and not is_run_dir(tmp_path / "nope")
    (tmp_path / "config.yaml").write_text("data: digits\n")
    assert is_run_dir(tmp_path) and is_run_dir(str(tmp_path))
    assert require_run_dir(str(tmp_path), "audit") == str(tmp_path)


def test_run_directories_on_s3(s3_server):
    from adasim_ray.rundir.layout import join, list_dirs, split, write_text

    runs = s3_server.uri(f"{s3_server.bucket()}/runs")
    with pytest.raises(UserError, match="run directory not found"):
        require_run_dir(join(runs, "r1"), "--resume")
    write_text(join(runs, "r1", "metrics.jsonl"), "")
    with pytest.raises(UserError, match="has no config.yaml"):
        require_run_dir(join(runs, "r1"), "--resume")
    write_text(join(runs, "r1", "config.yaml"), "data: digits\n")
    write_text(join(runs, "r2", "config.yaml"), "data: digits\n")
    assert is_run_dir(join(runs, "r1"))
    assert require_run_dir(join(runs, "r1") + "/", "--resume") == join(runs, "r1")
    assert list_dirs(runs, "r") == [join(runs, "r1"), join(runs, "r2")]
    assert split(join(runs, "r2")) == (runs, "r2")


def test_require_run_dir_says_which_part_is_missing(tmp_path):
    with pytest.raises(UserError, match="^audit: run directory not found: .*nope$"):
        require_run_dir(tmp_path / "nope", "audit")
    with pytest.raises(ConfigError, match=r"^--resume: .* has no config.yaml: not a run dir"):
        require_run_dir(tmp_path, "--resume", ConfigError)
