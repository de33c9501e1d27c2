"""The one exception of the data package, defined with the package's other user errors in
:mod:`adasim_ray.errors` (so that ``adasim-ray`` catches it with them)."""

from __future__ import annotations

from adasim_ray.errors import DataError

__all__ = ["DataError"]
