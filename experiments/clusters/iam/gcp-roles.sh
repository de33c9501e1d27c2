#!/usr/bin/env bash
# The service accounts of experiments/clusters/gcp.yaml, least privilege:
# - both read the data bucket and the runs bucket, and write and delete objects under the
#   runs prefix only (gs://adasim-ray-runs/paper/, the ray.storage_path of the paper's runs);
# - the head also runs Ray's autoscaler: it creates and deletes the cluster's own VMs only
#   (Ray names them ray-CLUSTER_NAME-head-... and ray-CLUSTER_NAME-worker-...; gcp.yaml's
#   cluster_name is adasim-ray-gcp), which run as the worker account.
# The buckets need uniform bucket-level access (IAM conditions on object names need it).
# Run once per project with an owner's credentials:
#     PROJECT=my-gcp-project bash experiments/clusters/iam/gcp-roles.sh
set -euo pipefail
: "${PROJECT:?set PROJECT to your project id}"
DATA=adasim-ray-data
RUNS=adasim-ray-runs
RUNS_PREFIX=paper/
CLUSTER_NAME=adasim-ray-gcp
for sa in adasim-ray-head adasim-ray-worker; do
  gcloud iam service-accounts create "$sa" --project "$PROJECT" --display-name "$sa" || true
done
head="adasim-ray-head@$PROJECT.iam.gserviceaccount.com"
worker="adasim-ray-worker@$PROJECT.iam.gserviceaccount.com"
objects="resource.name.startsWith(\"projects/_/buckets/$RUNS/objects/$RUNS_PREFIX\")"
for sa in "$head" "$worker"; do
  gcloud storage buckets add-iam-policy-binding "gs://$DATA" --member "serviceAccount:$sa" --role roles/storage.objectViewer
  gcloud storage buckets add-iam-policy-binding "gs://$RUNS" --member "serviceAccount:$sa" --role roles/storage.objectViewer
  gcloud storage buckets add-iam-policy-binding "gs://$RUNS" --member "serviceAccount:$sa" --role roles/storage.objectUser \
    --condition "expression=$objects,title=runs-prefix-only"
done
# Instance admin on this cluster's VMs only; other resources (disks, the zone's listings) as
# the role gives them.
vms="resource.type != \"compute.googleapis.com/Instance\" || resource.name.extract(\"/instances/{name}\").startsWith(\"ray-$CLUSTER_NAME-\")"
gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$head" --role roles/compute.instanceAdmin.v1 \
  --condition "expression=$vms,title=adasim-ray-gcp-vms-only"
gcloud iam service-accounts add-iam-policy-binding "$worker" --project "$PROJECT" --member "serviceAccount:$head" --role roles/iam.serviceAccountUser
