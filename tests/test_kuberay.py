"""experiments/clusters/kuberay/rayjob.yaml, checked offline: its head and worker pod templates
against Kubernetes' own schemas (the `kubernetes-validate` package ships them), its RayJob
fields by name against KubeRay's API reference, its command against the CLI and the config it
names, and the run against the pods (the placement that `adasim-ray check` judges)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from adasim_ray.cli import build_parser
from adasim_ray.config import load_config
from adasim_ray.resources.cluster_yaml import cluster_yaml_nodes
from adasim_ray.resources.placement import Node, shortfall

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "experiments" / "clusters" / "kuberay" / "rayjob.yaml"
#: Where the manifest's image holds this repository (its header says so).
IMAGE_ROOT = "/opt/adasim-ray/"

# The fields of KubeRay's ray.io/v1 types, from its API reference: docs/reference/api.md of
# ray-project/kuberay (https://ray-project.github.io/kuberay/reference/api/, also
# https://docs.ray.io/en/master/cluster/kubernetes/references/api.html), as of KubeRay v1.7.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
    "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "preRunningDeadlineSeconds", "shutdownAfterJobFinishes", "suspend",
}
RAYCLUSTER_SPEC_FIELDS = {
    "upgradeStrategy", "authOptions", "suspend", "managedBy", "autoscalerOptions",
    "headServiceAnnotations", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
    "historyServerOptions", "networkPolicy", "tlsOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs",
}
HEAD_GROUP_FIELDS = {
    "template", "headService", "enableIngress", "ingressOptions", "resources", "labels",
    "rayStartParams", "serviceType",
}
WORKER_GROUP_FIELDS = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "priority", "resources", "labels", "rayStartParams", "template", "scaleStrategy",
    "numOfHosts",
}
SUBMITTER_CONFIG_FIELDS = {"backoffLimit"}
AUTH_OPTIONS_FIELDS = {"mode", "enableK8sTokenAuth", "secretName"}
#: Required by the CRD (json tags without omitempty).
HEAD_GROUP_REQUIRED = {"template"}
WORKER_GROUP_REQUIRED = {"groupName", "template", "minReplicas", "maxReplicas"}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _templates(rayjob: dict) -> dict[str, dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"]["template"]} | {
        group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}


def test_the_rayjob_uses_only_fields_kuberay_documents(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert set(rayjob) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = rayjob["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
    assert set(spec.get("submitterConfig", {})) <= SUBMITTER_CONFIG_FIELDS
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_SPEC_FIELDS, set(cluster) - RAYCLUSTER_SPEC_FIELDS
    assert set(cluster.get("authOptions", {})) <= AUTH_OPTIONS_FIELDS
    head = cluster["headGroupSpec"]
    assert HEAD_GROUP_REQUIRED <= set(head) <= HEAD_GROUP_FIELDS, set(head)
    assert cluster["workerGroupSpecs"], "no worker group"
    for group in cluster["workerGroupSpecs"]:
        assert WORKER_GROUP_REQUIRED <= set(group) <= WORKER_GROUP_FIELDS, set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for params in [head.get("rayStartParams", {})] + [
            g.get("rayStartParams", {}) for g in cluster["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams are strings"


def test_the_job_retries_on_a_new_cluster_and_deletes_it_at_the_end(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1


@pytest.mark.parametrize("group", ["head", "gpu-workers"])
def test_the_pod_templates_pass_kubernetes_schemas(rayjob, group):
    import kubernetes_validate

    template = _templates(rayjob)[group]
    # A core/v1 PodTemplate carries exactly a PodTemplateSpec: the type of both `template`s.
    resource = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group},
                "template": template}
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_rejects_a_misspelt_field(rayjob):
    import kubernetes_validate

    template = yaml.safe_load(yaml.safe_dump(_templates(rayjob)["head"]))
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop(
        "resources")
    with pytest.raises(kubernetes_validate.ValidationError, match="'resource' was unexpected"):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "x"}, "template": template},
                                     kubernetes_validate.latest_version(), strict=True)


def _entrypoint(rayjob: dict) -> list[str]:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "adasim-ray", argv
    return argv[1:]


def test_the_entrypoint_is_a_named_run_of_a_paper_config_on_s3(rayjob):
    argv = _entrypoint(rayjob)
    args = build_parser().parse_args(argv)
    assert args.command == "pretrain"
    assert args.name == rayjob["metadata"]["name"] == "adasim-vits16-adasim"
    assert args.config.startswith(IMAGE_ROOT)
    sets = dict(s.split("=", 1) for s in args.set)
    assert sets["ray.storage_path"].startswith("s3://")
    load_config(ROOT / args.config.removeprefix(IMAGE_ROOT), list(args.set))


def _pod_node(name: str, template: dict) -> Node:
    (container,) = template["spec"]["containers"]
    limits = container["resources"]["limits"]
    return Node(name, float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0)))


def test_the_pods_are_sized_like_the_paper_cluster_and_fit_the_run(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    nodes = [_pod_node("head", cluster["headGroupSpec"]["template"])]
    for group in cluster["workerGroupSpecs"]:
        nodes += [_pod_node(f"{group['groupName']}[{i}]", group["template"])
                  for i in range(group["replicas"])]
    paper = cluster_yaml_nodes(ROOT / "cluster.yaml")
    # The GPUs of cluster.yaml at its maximum, node by node: 1 on the head, 2 workers x 8.
    assert [n.gpus for n in nodes] == [n.gpus for n in paper]
    # The run fits the pods, as `adasim-ray check` judges a cluster.
    args = build_parser().parse_args(_entrypoint(rayjob))
    cfg = load_config(ROOT / args.config.removeprefix(IMAGE_ROOT), list(args.set))
    assert shortfall(cfg, nodes) is None
    assert cfg.ray.num_workers == sum(n.gpus for n in nodes[1:])
