"""The one exception of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """A data set cannot be opened or an image cannot be read.

    The message is one line and names the data set spec, split, shard or file at fault, so
    that a failure on a cluster worker points straight at what to fix.
    """
