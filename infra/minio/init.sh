#!/bin/bash
# One-shot MinIO setup (the `minio-init` service of docker-compose.yml, docs/deploy.md): the two
# buckets, one policy and one user per client (least privilege), each user's key pair read from
# its AWS credentials file (docker secret). Idempotent: rerun it after rotating a key.
# Secrets never reach a command line of a long-lived process: the root key is passed to mc through
# MC_HOST_local (environment); `mc admin user add` takes the client keys as arguments inside this
# short-lived container only.
set -euo pipefail

root_password=$(cat /run/secrets/minio_root_password)
export MC_HOST_local="http://${MINIO_ROOT_USER}:${root_password}@minio:9000"
dvc_bucket=${BABELRS_S3_BUCKET:-babelrs-dvc}

ini_value() {  # ini_value FILE KEY: the value of KEY in an AWS credentials file
    local key value
    while IFS=' =' read -r key value; do
        if [[ "$key" == "$2" ]]; then
            printf '%s' "$value"
            return 0
        fi
    done < "$1"
    echo "minio-init: $2 missing in $1" >&2
    return 1
}

mc mb --ignore-existing "local/${dvc_bucket}" local/mlflow

# user name = policy name = the file stems under policies/ and the secret names s3_<stem>.ini
for client in worker mlflow reader; do
    name="babelrs-${client}"
    creds="/run/secrets/s3_${client}.ini"
    policy=$(cat "/babelrs-minio/policies/${name}.json")
    printf '%s' "${policy//babelrs-dvc/$dvc_bucket}" > "/tmp/${name}.json"
    mc admin policy create local "$name" "/tmp/${name}.json"
    access=$(ini_value "$creds" aws_access_key_id)
    secret=$(ini_value "$creds" aws_secret_access_key)
    mc admin user add local "$access" "$secret"
    # attaching an already attached policy is an error in mc; the state is what we want
    mc admin policy attach local "$name" --user "$access" || true
    echo "minio-init: user ${access} with policy ${name}"
done
