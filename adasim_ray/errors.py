"""The errors a user can fix, at the ground floor of the package: every module may raise them,
and ``adasim-ray`` prints any of them as one line with exit code 2.

They share :class:`AdasimError`, so the command line catches one type; each also keeps the
builtin base it has always had (``ValueError`` for a bad value, ``RuntimeError`` for a
checkpoint that cannot be used), because callers catch those too.

This module imports nothing from the package, so that importing an error never pulls in
(or cycles through) the code that raises it.

Examples:
    >>> issubclass(ConfigError, ValueError) and issubclass(ConfigError, AdasimError)
    True
"""

from __future__ import annotations

__all__ = [
    "AdasimError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RunStoppedError",
    "StorageError",
    "StorageStoppedError",
    "UserError",
    "first_line",
]


class AdasimError(Exception):
    """A problem the user can fix; the message is one line that names what is at fault."""


class UserError(AdasimError):
    """A bad command-line input (an argument, a path that is not a run directory)."""


class ConfigError(AdasimError, ValueError):
    """A configuration value is invalid; the message names the field (dotted path)."""


class DataError(AdasimError, ValueError):
    """A data set cannot be opened or an image cannot be read.

    The message is one line and names the data set spec, split, shard or file at fault, so
    that a failure on a cluster worker points straight at what to fix.
    """


class CheckpointError(AdasimError, RuntimeError):
    """A checkpoint that cannot be used (truncated, foreign settings, missing)."""


class RunStoppedError(AdasimError, RuntimeError):
    """A run ended by a fault it could not survive (more failures than ``ray.max_failures``);
    the message says what died, where the run got to and the command that continues it."""


class StorageError(AdasimError):
    """Run storage refused for good (access denied, no such bucket, no space left): never
    retried, it ends the run at once. The message names the URI and the cause; a transient
    error (a timeout, a 5xx, throttling) is retried instead (``resources/store.py``). Not an
    ``OSError``, so that code which reads a failing storage as "nothing there" does not
    swallow it."""


class StorageStoppedError(StorageError, RunStoppedError):
    """A run that storage refused for good, stopped where it was: a fault that ended a run
    (exit code 3, the line ends with the command that continues it), not a bad input."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, else its type's name: what a one-line report
    shows of an error raised by a library (Ray, pyarrow, jsonschema) whose messages run on.

    Examples:
        >>> first_line(ValueError("bad value\\nTraceback ...")), first_line(KeyError())
        ('bad value', 'KeyError')
    """
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
