"""The options that several sub-commands share, each written once: ``--config`` and ``--data``
(which run, on which data set) and ``--set KEY=VALUE`` (a field of it changed), and how they
become the config's path and its overrides."""

from __future__ import annotations

import argparse

from adasim_ray.data.spec import SPEC_HELP
from adasim_ray.presets import DEMO_DATA_SIZED, default_config_path, demo_resets


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
    ``--set data=...``.

    On the embedded demo (no ``--config``) with another data set than its MNIST, the demo's
    data-sized fields (``presets.DEMO_DATA_SIZED``: its 3,000-image limit, evaluation
    subsets and digit crops) first go back to their defaults, and a line says so; the
    user's own ``--set`` of any of them still wins."""
    sets = list(args.set or [])
    if args.data is not None:
        sets.append(f"data={args.data}")
    if getattr(args, "config", None) is None and getattr(args, "resume", None) is None:
        data = next((s.split("=", 1)[1].strip() for s in reversed(sets)
                     if s.split("=", 1)[0].strip() == "data"), None)
        resets = demo_resets(data)
        if resets:
            print(f"[adasim] the demo preset on {data}: {', '.join(DEMO_DATA_SIZED)} at their "
                  "defaults (all images, the paper's crops); --set any of them to change it",
                  flush=True)
        sets = resets + sets
    return sets
