"""The Train worker's console quieting: Ray's own INFO lines leave the console, not the logs."""

from __future__ import annotations

import io
import logging

import pytest

from adasim_ray.train.hooks import QUIET_LOGGERS, quiet_ray_console


@pytest.fixture
def ray_loggers(tmp_path):
    """Each quieted logger with a console handler and a file handler, restored afterwards."""
    saved = {name: logging.getLogger(name).handlers[:] for name in QUIET_LOGGERS}
    added = {}
    for name in QUIET_LOGGERS:
        console = logging.StreamHandler(io.StringIO())
        console.setLevel(logging.INFO)
        log_file = logging.FileHandler(tmp_path / f"{name}.log")
        log_file.setLevel(logging.DEBUG)
        logger = logging.getLogger(name)
        logger.handlers = [console, log_file]
        added[name] = (logger, console, log_file)
    yield added
    for name, (logger, _console, log_file) in added.items():
        log_file.close()
        logger.handlers = saved[name]


def test_info_leaves_the_console_but_stays_in_the_log_file(ray_loggers, tmp_path):
    quiet_ray_console()
    for name, (logger, console, log_file) in ray_loggers.items():
        level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            logger.info("Reporting training result 1")
            logger.warning("a real warning")
        finally:
            logger.setLevel(level)
        log_file.flush()
        shown = console.stream.getvalue()
        assert "Reporting training result" not in shown, name
        assert "a real warning" in shown, name
        kept = (tmp_path / f"{name}.log").read_text()
        assert "Reporting training result 1" in kept and "a real warning" in kept, name


def test_never_lowers_a_console_handler_already_stricter(ray_loggers):
    _, console, _ = ray_loggers[QUIET_LOGGERS[0]]
    console.setLevel(logging.ERROR)
    quiet_ray_console()
    assert console.level == logging.ERROR
