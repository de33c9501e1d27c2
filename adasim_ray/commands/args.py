"""The options that several sub-commands share, each written once: ``--config`` and ``--data``
(which run, on which data set) and ``--set KEY=VALUE`` (a field of it changed), and how they
become the config's path and its overrides."""

from __future__ import annotations

import argparse
import os

from adasim_ray.data.spec import SPEC_HELP
from adasim_ray.presets import (
    DEMO_DATA_SIZED,
    PRESETS,
    choose_preset,
    demo_resets,
    preset_path,
)


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
    """``--config YAML`` or ``--preset NAME`` (default: the preset that fits the data and the
    machine) and ``--data SPEC`` (the data set, any of the spec forms of
    :mod:`adasim_ray.data.spec`)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", help="experiment YAML (default: a preset, see --preset)")
    which.add_argument(
        "--preset", choices=list(PRESETS),
        help="a recipe shipped in the package: " + "; ".join(
            f"{name}: {what}" for name, what in PRESETS.items())
        + ". Default: demo for the demo's data, else node with 8+ GPUs, gpu with a GPU (or "
        "--set ray.use_gpu=true), else cpu")
    parser.add_argument("--data", help=f"data set: {SPEC_HELP}")


def set_value(args: argparse.Namespace, key: str) -> str | None:
    """The last ``--set KEY=VALUE`` of ``key`` (``--data`` for ``data``), or None."""
    if key == "data" and getattr(args, "data", None) is not None:
        return str(args.data)
    found = None
    for entry in getattr(args, "set", None) or []:
        name, _, value = entry.partition("=")
        if name.strip() == key:
            found = value.strip()
    return found


def _gpus(args: argparse.Namespace) -> int:
    """The GPUs the run would have: the cluster's (``ray.address`` / RAY_ADDRESS), else this
    machine's."""
    from adasim_ray.resources.placement import local_nodes, ray_nodes

    address = set_value(args, "ray.address") or os.environ.get("RAY_ADDRESS")
    try:
        nodes = ray_nodes(address) if address else local_nodes()
    except Exception:  # noqa: BLE001 - an unreachable cluster: judged as none here
        nodes = local_nodes()
    return int(sum(node.gpus for node in nodes))


def run_preset(args: argparse.Namespace) -> str | None:
    """The preset a run without ``--config`` (or ``--resume``) runs: ``--preset``, else the
    one :func:`~adasim_ray.presets.choose_preset` picks for its data and this machine, said
    in one line (once)."""
    if getattr(args, "config", None) is not None or getattr(args, "resume", None) is not None:
        return None
    if getattr(args, "preset", None) is not None:
        return str(args.preset)
    chosen = getattr(args, "chosen_preset", None)
    if chosen is None:
        use_gpu = (set_value(args, "ray.use_gpu") or "").lower() in ("true", "1", "yes")
        data = set_value(args, "data")
        chosen, why = choose_preset(data, use_gpu, 0 if data is None else _gpus(args))
        print(f"[adasim] preset {chosen} ({why}; --preset {'|'.join(PRESETS)} chooses): "
              f"{PRESETS[chosen]}", flush=True)
        args.chosen_preset = chosen
    return str(chosen)


def config_path(args: argparse.Namespace) -> str:
    """The ``--config`` file as given, else the run's preset (:func:`run_preset`)."""
    return args.config or str(preset_path(run_preset(args) or "demo"))


def config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` in order, then ``--data`` as ``data=SPEC``: a ``--data`` wins over a
    ``--set data=...``.

    On the demo preset with another data set than its MNIST (``--preset demo --data X``), the
    demo's data-sized fields (``presets.DEMO_DATA_SIZED``: its 3,000-image limit, evaluation
    subsets and digit crops) first go back to their defaults, and a line says so; the
    user's own ``--set`` of any of them still wins."""
    sets = list(args.set or [])
    if args.data is not None:
        sets.append(f"data={args.data}")
    if run_preset(args) == "demo":
        data = set_value(args, "data")
        resets = demo_resets(data)
        if resets:
            print(f"[adasim] the demo preset on {data}: {', '.join(DEMO_DATA_SIZED)} at their "
                  "defaults (all images, the paper's crops); --set any of them to change it",
                  flush=True)
        sets = resets + sets
    return sets
