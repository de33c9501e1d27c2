#!/usr/bin/env bash
# The instance profiles of cluster.yaml, least privilege: the GPU workers read the data bucket
# and write the runs bucket (aws-worker-policy.json), nothing else; the head also runs Ray's
# autoscaler: it launches and terminates EC2 workers and hands them the worker role only
# (aws-head-policy.json). Ray's default, ray-autoscaler-v1, has full EC2 and S3 access.
# Edit the bucket names and the account id in the two policies, then, with admin credentials:
#     bash experiments/clusters/iam/aws-roles.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
for who in head worker; do
  name="adasim-ray-$who"
  aws iam create-role --role-name "$name" --assume-role-policy-document "$trust" || true
  aws iam put-role-policy --role-name "$name" --policy-name "$name" --policy-document "file://$here/aws-$who-policy.json"
  aws iam create-instance-profile --instance-profile-name "$name" || true
  aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name" || true
done
