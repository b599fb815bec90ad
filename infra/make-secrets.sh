#!/bin/bash
# Create the secret files of docker-compose.yml under infra/secrets/ (git-ignored, mode 600), each
# a fresh random value; existing files are kept. Rotate one by deleting it (or passing its name)
# and following docs/deploy.md "Rotating": e.g. `bash infra/make-secrets.sh --rotate s3_worker.ini`.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets

random() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-40}"; }

if [[ "${1:-}" == "--rotate" ]]; then
    [[ -n "${2:-}" ]] || { echo "usage: $0 [--rotate SECRET_NAME]" >&2; exit 2; }
    rm -f "secrets/$2"
fi

make() {  # make NAME CONTENT: write secrets/NAME unless it exists
    if [[ ! -e "secrets/$1" ]]; then
        printf '%s' "$2" > "secrets/$1"  # no trailing newline
        echo "make-secrets: wrote infra/secrets/$1"
    fi
}

make postgres_password "$(random)"
make minio_root_password "$(random)"
make mlflow_admin_password "$(random)"
make mlflow_worker_password "$(random)"
make mlflow_flask_secret_key "$(random 64)"
make prefect_auth_string "babelrs:$(random)"
# one MinIO user per client (infra/minio/policies/babelrs-<client>.json); AWS credentials files
for client in worker mlflow reader; do
    make "s3_${client}.ini" "$(printf '[default]\naws_access_key_id = babelrs-%s\naws_secret_access_key = %s' \
        "$client" "$(random)")"
done
