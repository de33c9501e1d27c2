"""Typed configuration objects read from YAML, with dotted ``key=value`` overrides.

The schema is a tree of dataclasses (``adasim_ray.config``); this module only knows how to turn
nested dicts into them, strictly: an unknown key, a value of the wrong type or a missing section
raises :class:`ConfigError` with one line that names the field by its dotted path.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from adasim_ray.errors import ConfigError

T = TypeVar("T")

#: A number in exponent notation without a dot ("1e-5"), which YAML 1.1 leaves a string.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, str, bool, Optional, tuple,
    list, Literal or a nested dataclass) and return it converted where lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        # each option's own words: "must be one of [...], got 'x'; or expected true or false"
        reasons = [e.split(": ", 1)[1].replace(f", got {value!r}", "") for e in errors]
        raise ConfigError(f"{path}: {'; or '.join(reasons)}; got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in pairs)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, path)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown config key (known here: {known})")
        kwargs[key] = _coerce(value, hints[key], where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # a section's own checks: "field: problem"
        if not path:
            raise
        raise ConfigError(f"{path}.{err}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (for YAML and JSON)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"adasim.tau=0.3"`` -> (["adasim", "tau"], 0.3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value (e.g. adasim.tau=0.3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]... = value``, creating sections as needed."""
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: is a value, not a section")
        node = child
    node[keys[-1]] = value


def flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """``{"a": {"b": 1}, "c.d": 2}`` -> ``[(["a", "b"], 1), (["c", "d"], 2)]`` (an empty
    dict is a value)."""
    out: list[tuple[list[str], Any]] = []
    for key, value in data.items():
        keys = (*prefix, *str(key).split("."))
        if isinstance(value, dict) and value:
            out += flatten(value, keys)
        else:
            out.append((list(keys), value))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (a local file, or a URI such as s3://bucket/runs/RUN/config.yaml);
    a missing file or a non-mapping is a ConfigError."""
    if "://" in str(path):
        text = _read_uri(str(path))
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def _read_uri(uri: str) -> str:
    import pyarrow.fs as pafs  # noqa: PLC0415 - only for configs on object storage

    from adasim_ray.data.files import resolve  # noqa: PLC0415

    fs, path = resolve(uri)
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise ConfigError(f"config file not found: {uri}")
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except OSError as err:
        raise ConfigError(f"cannot read {uri} ({' '.join(str(err).split())})") from None
