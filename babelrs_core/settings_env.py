"""Every environment variable a babelrs deployment reads, in one list (:data:`ENV_VARS`).

babelrs code reads the environment only through :func:`read`, which refuses names not listed here;
the variables read by the libraries we call (MLflow, boto3 / DVC, Prefect) and by the backing
services of ``infra/docker-compose.yml`` (PostgreSQL, the S3-compatible store) are listed with
their reader. ``tests/test_settings_env.py`` checks both ways that this list, the code and the
files under ``infra/`` (compose, Kubernetes, ``.env.example``, Dockerfile) name the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """One variable. ``via`` says where a deployment (``deploy``) sets it:

    * ``env``: ``infra/.env`` (listed in ``infra/.env.example``; never a secret);
    * ``secret``: a file under ``infra/secrets/`` handed to the service as a docker secret; compose
      sets ``<name>_FILE`` and the service (PostgreSQL, MinIO) or the image's entrypoint
      (``infra/entrypoint.sh``) reads it; on Kubernetes the ``babelrs-secrets`` Secret;
    * ``compose``: a fixed value in ``infra/docker-compose.yml`` (a path, a host name);
    * ``manual``: set by hand where needed (a workstation, the scripts in ``infra/local``, the
      node script of ``infra/k8s/finetune-multinode.yaml``).
    """

    name: str
    reader: str  # babelrs | mlflow | boto3 | prefect | transformers | torchrun | dvc | postgres ...
    help: str
    secret: bool = False
    deploy: bool = True  # set by a deployment (see ``via``); False: at run time
    via: str = "env"  # env | secret | compose | manual


def _docker_secret(
    name: str,
    reader: str,
    help: str,
    file_reader: str = "entrypoint",
    file_help: str = "file of it",
) -> tuple[EnvVar, EnvVar]:
    """A secret handed over as a docker secret (``via="secret"``) and the ``<name>_FILE`` variable
    compose sets to its file, read by ``file_reader`` (the image's entrypoint unless the service
    reads it itself)."""
    return (
        EnvVar(name, reader, help, secret=True, via="secret"),
        EnvVar(f"{name}_FILE", file_reader, file_help, via="compose"),
    )


ENV_VARS: tuple[EnvVar, ...] = (
    # -- babelrs itself ---------------------------------------------------------------------------
    EnvVar("MLFLOW_TRACKING_URI", "babelrs", "MLflow server; unset: local store outputs/mlflow"),
    EnvVar("BABELRS_S3_BUCKET", "babelrs", "bucket of the DVC S3 remote (data remote bootstrap)"),
    EnvVar("AWS_ENDPOINT_URL_S3", "babelrs", "S3-compatible endpoint (also read by boto3 / DVC)"),
    EnvVar("AWS_ENDPOINT_URL", "babelrs", "fallback endpoint of every AWS service (boto3 too)"),
    EnvVar("AWS_REGION", "babelrs", "S3 region (also boto3)"),
    EnvVar("AWS_DEFAULT_REGION", "babelrs", "S3 region, fallback (also boto3)"),
    EnvVar("PREFECT_HOME", "babelrs", "Prefect's local state folder (also read by Prefect)"),
    EnvVar(
        "BABELRS_PARENT_RUN_ID",
        "babelrs",
        "MLflow parent run of a stage run (the runners pass it)",
        deploy=False,
    ),
    EnvVar(
        "BABELRS_GATE_PAUSE_S",
        "babelrs",
        "tests only: seconds the promotion gate holds its lock (race test)",
        deploy=False,
    ),
    EnvVar(
        "BABELRS_FAULT_STOP_WRITE",
        "babelrs",
        "tests only: glob of file names whose atomic write stops half-way (SIGSTOP; kill -9 test)",
        deploy=False,
    ),
    EnvVar(
        "BABELRS_FAULT_STOP_AFTER_REGISTER",
        "babelrs",
        "tests only: 1 = the register stage stops (SIGSTOP) once the model version exists",
        deploy=False,
    ),
    EnvVar(
        "BABELRS_DEBUG",
        "babelrs",
        "1: the CLI shows the traceback of errors (babelrs --debug sets it)",
        deploy=False,
    ),
    EnvVar(
        "PATH",
        "babelrs",
        "babelrs env puts the virtualenv's bin first when it is missing (mlflow runs uvicorn)",
        deploy=False,
    ),
    EnvVar("RANK", "babelrs", "global rank (set by torchrun)", deploy=False),
    EnvVar("LOCAL_RANK", "babelrs", "rank on this machine (set by torchrun)", deploy=False),
    EnvVar("WORLD_SIZE", "babelrs", "number of processes (set by torchrun)", deploy=False),
    EnvVar("GROUP_RANK", "babelrs", "rank of this node (set by torchrun)", deploy=False),
    # -- libraries babelrs calls ------------------------------------------------------------------
    EnvVar(
        "AWS_ACCESS_KEY_ID", "boto3", "S3 key of a workstation / pod", secret=True, via="manual"
    ),
    EnvVar(
        "AWS_SECRET_ACCESS_KEY",
        "boto3",
        "S3 secret of a workstation / pod",
        secret=True,
        via="manual",
    ),
    EnvVar(
        "AWS_SHARED_CREDENTIALS_FILE",
        "boto3",
        "AWS credentials file of the service's own MinIO user (a docker secret)",
        via="compose",
    ),
    EnvVar(
        "MLFLOW_S3_ENDPOINT_URL",
        "mlflow",
        "S3 endpoint of the MLflow server's artifact store (clients: none, artifacts are proxied)",
    ),
    EnvVar(
        "MLFLOW_SERVER_ALLOWED_HOSTS",
        "mlflow",
        "Host headers the MLflow server answers (mlflow server --allowed-hosts); never *",
    ),
    EnvVar("MLFLOW_TRACKING_USERNAME", "mlflow", "MLflow user of the client (basic auth)"),
    *_docker_secret("MLFLOW_TRACKING_PASSWORD", "mlflow", "that user's password"),
    EnvVar("MLFLOW_AUTH_CONFIG_PATH", "mlflow", "basic-auth app config (server)", via="compose"),
    *_docker_secret(
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "mlflow",
        "basic-auth admin password, used at the server's first start",
    ),
    *_docker_secret(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "mlflow",
        "signs the basic-auth app's sessions / CSRF tokens (server)",
    ),
    EnvVar("PREFECT_API_URL", "prefect", "Prefect server API; unset: an ephemeral server"),
    *_docker_secret(
        "PREFECT_API_AUTH_STRING",
        "prefect",
        "client side of the server's auth string (user:password)",
    ),
    *_docker_secret(
        "PREFECT_SERVER_API_AUTH_STRING",
        "prefect",
        "the Prefect server answers only requests with this basic-auth user:password",
    ),
    EnvVar(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "prefect",
        "Prefect server's database URL (the local scheduler's SQLite; compose sets the parts)",
        secret=True,
        via="manual",
    ),
    EnvVar("PREFECT_SERVER_DATABASE_DRIVER", "prefect", "postgresql+asyncpg", via="compose"),
    EnvVar("PREFECT_SERVER_DATABASE_HOST", "prefect", "database host", via="compose"),
    EnvVar("PREFECT_SERVER_DATABASE_PORT", "prefect", "database port", via="compose"),
    EnvVar("PREFECT_SERVER_DATABASE_NAME", "prefect", "Prefect's database", via="compose"),
    EnvVar("PREFECT_SERVER_DATABASE_USER", "prefect", "= POSTGRES_USER", via="compose"),
    *_docker_secret("PREFECT_SERVER_DATABASE_PASSWORD", "prefect", "= the PostgreSQL password"),
    EnvVar("HF_HUB_OFFLINE", "transformers", "never download models (babelrs sets 1 by default)"),
    # set by the node script of infra/k8s/finetune-multinode.yaml (multi-node fine-tuning)
    EnvVar(
        "PET_LOCAL_ADDR",
        "torchrun",
        "this node's address (--local-addr): c10d gives rank 0 to the one that sorts first",
        via="manual",
    ),
    EnvVar(
        "PET_RDZV_CONF",
        "torchrun",
        "--rdzv-conf: is_host (this node hosts the rendezvous store), join / read timeouts",
        via="manual",
    ),
    EnvVar("DVC_GLOBAL_CONFIG_DIR", "dvc", "folder of DVC's global config", via="manual"),
    # -- backing services of infra/docker-compose.yml ---------------------------------------------
    EnvVar(
        "BIND_ADDR", "compose", "interface of the published ports (default 127.0.0.1: this host)"
    ),
    EnvVar("POSTGRES_USER", "postgres", "database user (MLflow and Prefect backends)"),
    *_docker_secret("POSTGRES_PASSWORD", "postgres", "database password", file_reader="postgres"),
    EnvVar("POSTGRES_DB", "postgres", "database created at first start (MLflow's)"),
    EnvVar("MINIO_ROOT_USER", "minio", "object-store admin (only minio-init signs in with it)"),
    *_docker_secret(
        "MINIO_ROOT_PASSWORD",
        "minio",
        "object-store admin secret",
        file_reader="minio",
        file_help="docker secret name of it",
    ),
)

ENV: dict[str, EnvVar] = {v.name: v for v in ENV_VARS}


def read(name: str, default: str | None = None) -> str | None:
    """``os.environ[name]`` (or ``default``); ``name`` must be listed in :data:`ENV_VARS`."""
    if name not in ENV:
        raise KeyError(f"environment variable {name!r} is not declared in settings_env.ENV_VARS")
    return os.environ.get(name, default)


#: What keeps a babelrs process offline: no model is ever fetched from a hub (the language pivot
#: reads local folders only; ``huggingface_hub`` reads it at import). Set in-process by
#: :func:`offline_by_default`; subprocesses of the tests and benchmarks get it whole. The Makefile
#: exports the same.
OFFLINE_ENV: dict[str, str] = {"HF_HUB_OFFLINE": "1"}

#: No usage analytics or promotional content from a Prefect server, no tracking by the tools that
#: honour ``DO_NOT_TRACK`` (the Makefile and ``infra/local/_common.sh`` export the same).
NO_TELEMETRY_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "DO_NOT_TRACK": "1",
}


def offline_by_default() -> None:
    """Set :data:`OFFLINE_ENV` in ``os.environ`` where it is not set already (a value the caller
    set wins)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
