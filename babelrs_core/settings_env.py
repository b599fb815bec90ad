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
    name: str
    reader: str  # babelrs | mlflow | boto3 | prefect | transformers | postgres | minio
    help: str
    secret: bool = False
    deploy: bool = True  # set by a deployment (listed in infra/.env.example); False: at run time


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
    EnvVar("RANK", "babelrs", "global rank (set by torchrun)", deploy=False),
    EnvVar("LOCAL_RANK", "babelrs", "rank on this machine (set by torchrun)", deploy=False),
    EnvVar("WORLD_SIZE", "babelrs", "number of processes (set by torchrun)", deploy=False),
    # -- libraries babelrs calls ------------------------------------------------------------------
    EnvVar("AWS_ACCESS_KEY_ID", "boto3", "S3 credentials (DVC, MLflow artifacts)", secret=True),
    EnvVar("AWS_SECRET_ACCESS_KEY", "boto3", "S3 credentials (DVC, MLflow artifacts)", secret=True),
    EnvVar("MLFLOW_S3_ENDPOINT_URL", "mlflow", "S3-compatible endpoint of MLflow's artifacts"),
    EnvVar("PREFECT_API_URL", "prefect", "Prefect server API; unset: an ephemeral server"),
    EnvVar(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "prefect",
        "Prefect server's database (PostgreSQL via asyncpg)",
        secret=True,
    ),
    EnvVar("HF_HUB_OFFLINE", "transformers", "never download models (babelrs sets 1 by default)"),
    # -- backing services of infra/docker-compose.yml ---------------------------------------------
    EnvVar("POSTGRES_USER", "postgres", "database user (MLflow and Prefect backends)"),
    EnvVar("POSTGRES_PASSWORD", "postgres", "database password", secret=True),
    EnvVar("POSTGRES_DB", "postgres", "database created at first start (MLflow's)"),
    EnvVar("MINIO_ROOT_USER", "minio", "object-store admin = AWS_ACCESS_KEY_ID of the team"),
    EnvVar("MINIO_ROOT_PASSWORD", "minio", "object-store admin secret", secret=True),
)

ENV: dict[str, EnvVar] = {v.name: v for v in ENV_VARS}


def read(name: str, default: str | None = None) -> str | None:
    """``os.environ[name]`` (or ``default``); ``name`` must be listed in :data:`ENV_VARS`."""
    if name not in ENV:
        raise KeyError(f"environment variable {name!r} is not declared in settings_env.ENV_VARS")
    return os.environ.get(name, default)
