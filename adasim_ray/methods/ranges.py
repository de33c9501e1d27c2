"""The ranges of a method's config fields, checked in one place: each method's config calls
:func:`check_ranges` from its ``__post_init__``, so a bad value fails with the same one-line
error (``field: must ...``) whichever method it belongs to, before any cluster work starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_ranges(config: Any, *, positive: Iterable[str] = (),
                 non_negative: Iterable[str] = (), unit: Iterable[str] = (),
                 unit_open: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` outside its range, in one
    line: ``positive`` fields must be > 0, ``non_negative`` >= 0, ``unit`` in [0, 1] (an EMA
    momentum that may freeze the teacher), ``unit_open`` in [0, 1) (an SGD momentum).

    Examples:
        >>> from types import SimpleNamespace
        >>> check_ranges(SimpleNamespace(base_lr=0.0), positive=["base_lr"])
        Traceback (most recent call last):
        ...
        ValueError: base_lr: must be > 0, got 0.0
    """
    rules = (
        (positive, "must be > 0", lambda v: v > 0),
        (non_negative, "must be >= 0", lambda v: v >= 0),
        (unit, "must lie in [0, 1]", lambda v: 0.0 <= v <= 1.0),
        (unit_open, "must lie in [0, 1)", lambda v: 0.0 <= v < 1.0),
    )
    for names, rule, holds in rules:
        for name in names:
            value = getattr(config, name)
            if not holds(value):
                raise ValueError(f"{name}: {rule}, got {value}")
