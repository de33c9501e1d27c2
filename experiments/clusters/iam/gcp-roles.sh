#!/usr/bin/env bash
# The service accounts of experiments/clusters/gcp.yaml, least privilege: the workers read the
# data bucket and write the runs bucket, nothing else; the head also runs Ray's autoscaler
# (it creates and deletes the worker VMs, which run as the worker account).
# Run once per project with an owner's credentials: PROJECT=my-gcp-project bash gcp-roles.sh
set -euo pipefail
: "${PROJECT:?set PROJECT to your project id}"
DATA=gs://adasim-ray-data  # EDIT
RUNS=gs://adasim-ray-runs  # EDIT
for sa in adasim-ray-head adasim-ray-worker; do
  gcloud iam service-accounts create "$sa" --project "$PROJECT" --display-name "$sa" || true
done
head="adasim-ray-head@$PROJECT.iam.gserviceaccount.com"
worker="adasim-ray-worker@$PROJECT.iam.gserviceaccount.com"
for sa in "$head" "$worker"; do
  gcloud storage buckets add-iam-policy-binding "$DATA" --member "serviceAccount:$sa" --role roles/storage.objectViewer
  gcloud storage buckets add-iam-policy-binding "$RUNS" --member "serviceAccount:$sa" --role roles/storage.objectUser
done
gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$head" --role roles/compute.instanceAdmin.v1
gcloud iam service-accounts add-iam-policy-binding "$worker" --project "$PROJECT" --member "serviceAccount:$head" --role roles/iam.serviceAccountUser
