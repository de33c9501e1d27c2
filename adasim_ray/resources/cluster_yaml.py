"""A ``ray up`` cluster YAML, checked offline as ``ray up`` checks it, and read as the nodes the
cluster has at its autoscaling maximum (what ``adasim-ray check --cluster`` places a run on)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from adasim_ray.configfile import read_yaml
from adasim_ray.errors import ConfigError, UserError, first_line
from adasim_ray.resources.placement import Node, accelerators_of

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written by `ray up` on the head node


def validate_cluster_yaml(path: str | Path) -> dict[str, Any]:
    """Check a ``ray up`` cluster YAML offline, as ``ray up`` does before it calls the cloud:
    Ray's autoscaler schema (``ray/autoscaler/ray-schema.json``, draft-07), then Ray's own
    checks on the config merged with its provider's ``defaults.yaml``. Returns the merged
    config.

    Raises:
        UserError: one line naming the file and the first problem.
    """
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        data = read_yaml(Path(path).expanduser())
    except ConfigError as err:
        raise UserError(f"--cluster: {err}") from None
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise UserError(f"--cluster: {path}: {where}: {first_line(error)}")
    util_log = logging.getLogger("ray.autoscaler._private.util")
    level = util_log.level
    util_log.setLevel(logging.WARNING)  # "setting max workers for head node type to 0"
    try:
        merged = prepare_config(copy.deepcopy(data))
        validate_config(merged)
    except Exception as err:  # Ray raises ValueError, RuntimeError, NotImplementedError, ...
        raise UserError(f"--cluster: {path}: {first_line(err)}") from None
    finally:
        util_log.setLevel(level)
    return merged


def cluster_yaml_nodes(path: str | Path) -> list[Node]:
    """The nodes of a ``ray up`` cluster YAML (validated first) at its autoscaling maximum:
    the head, then each worker type at its ``max_workers`` (within the global one)."""
    data = validate_cluster_yaml(path)
    types = data["available_node_types"]
    head = data["head_node_type"]
    budget = int(data.get("max_workers", 0))
    nodes = []
    for name in [head, *(t for t in types if t != head)]:
        spec = types[name]
        resources = spec.get("resources")
        if not isinstance(resources, dict) or "CPU" not in resources:
            raise UserError(f"--cluster: node type {name!r} in {path} does not state its resources")
        count = 1 if name == head else min(int(spec.get("max_workers", budget)), budget)
        if name != head:
            budget -= count
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        memory = float(resources["memory"]) if "memory" in resources else None
        kinds = accelerators_of(resources)
        nodes += [Node(f"{name}[{i}]", cpus, gpus, memory, None, kinds) for i in range(count)]
    return nodes
