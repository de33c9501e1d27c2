"""The options that several sub-commands share, each written once: ``--config`` and ``--data``
(which run, on which data set) and ``--set KEY=VALUE`` (a field of it changed), and how they
become the config's path and its overrides."""

from __future__ import annotations

import argparse

from adasim_ray.data.spec import SPEC_HELP
from adasim_ray.presets import default_config_path


def add_set_argument(
    parser: argparse.ArgumentParser, example: str, what: str = "a config field"
) -> None:
    """``--set KEY=VALUE``, repeatable: override ``what`` by its dotted name (``example``
    shows one, so that the help of each command suggests a field that matters to it)."""
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"override {what} by its dotted name, e.g. {example}",
    )


def add_config_and_data(parser: argparse.ArgumentParser) -> None:
    """``--config YAML`` (default: the embedded demo) and ``--data SPEC`` (the data set, any
    of the spec forms of :mod:`adasim_ray.data.spec`)."""
    parser.add_argument("--config", help="experiment YAML (default: the embedded MNIST demo)")
    parser.add_argument("--data", help=f"data set: {SPEC_HELP}")


def config_path(args: argparse.Namespace) -> str:
    """The ``--config`` file as given, else the embedded demo."""
    return args.config or str(default_config_path())


def config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` in order, then ``--data`` as ``data=SPEC``: a ``--data`` wins over a
    ``--set data=...``."""
    sets = list(args.set or [])
    if args.data is not None:
        sets.append(f"data={args.data}")
    return sets
