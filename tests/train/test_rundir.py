"""What makes a directory a run directory, decided in one place."""

from __future__ import annotations

import pytest

from adasim_ray.errors import ConfigError, UserError
from adasim_ray.train.rundir import is_run_dir, require_run_dir


def test_a_run_directory_is_one_with_config_yaml(tmp_path):
    assert not is_run_dir(tmp_path) and not is_run_dir(tmp_path / "nope")
    (tmp_path / "config.yaml").write_text("data: digits\n")
    assert is_run_dir(tmp_path) and is_run_dir(str(tmp_path))
    assert require_run_dir(str(tmp_path), "audit") == tmp_path


def test_require_run_dir_says_which_part_is_missing(tmp_path):
    with pytest.raises(UserError, match="^audit: run directory not found: .*nope$"):
        require_run_dir(tmp_path / "nope", "audit")
    with pytest.raises(ConfigError, match=r"^--resume: .* has no config.yaml: not a run dir"):
        require_run_dir(tmp_path, "--resume", ConfigError)
