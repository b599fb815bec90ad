#!/bin/bash
# Entrypoint of the babelrs image: for each secret setting NAME below whose NAME_FILE is set (a
# docker secret or a mounted Kubernetes secret file), export NAME from the file's content, then run
# the command. Secrets thus reach MLflow / Prefect through the environment of the process, never
# through a command line or the compose file (docs/deploy.md "Secrets").
set -euo pipefail

for name in MLFLOW_TRACKING_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY \
            PREFECT_API_AUTH_STRING PREFECT_SERVER_API_AUTH_STRING PREFECT_SERVER_DATABASE_PASSWORD; do
    file_var="${name}_FILE"
    if [[ -n "${!file_var:-}" ]]; then
        if [[ ! -r "${!file_var}" ]]; then
            echo "entrypoint: ${file_var}=${!file_var} is not a readable file" >&2
            exit 78
        fi
        export "${name}=$(cat "${!file_var}")"
    fi
    unset "${file_var}"
done
exec "$@"
