"""The user's errors share one base (what `launch.py` catches) and keep their builtin ones
(what library callers catch); the old import paths still name the same classes."""

from __future__ import annotations

import pytest

from adasim_ray import cli, configfile, data, errors
from adasim_ray.rundir import checkpoint


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.UserError, Exception),
        (errors.ConfigError, ValueError),
        (errors.DataError, ValueError),
        (errors.CheckpointError, RuntimeError),
    ],
)
def test_one_base_and_the_builtin_one(error, builtin):
    assert issubclass(error, errors.AdasimError) and issubclass(error, builtin)


def test_the_old_names_are_the_same_classes():
    assert cli.UserError is errors.UserError
    assert configfile.ConfigError is errors.ConfigError
    assert data.DataError is data.errors.DataError is errors.DataError
    assert checkpoint.CheckpointError is errors.CheckpointError


def test_first_line():
    assert errors.first_line(OSError("disk full\nmore")) == "disk full"
    assert errors.first_line(KeyError()) == "KeyError"
