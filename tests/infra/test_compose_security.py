"""The team deployment lets no one in by default (infra/docker-compose.yml, rendered with the
defaults of infra/.env.example): every published port listens on 127.0.0.1, MLflow and Prefect
require authentication and every client can sign in, no secret is inline or on a command line,
each MinIO client has its own least-privilege user, and the image runs as a non-root user from a
build context without secrets or local state.

The ``*_is_caught`` tests feed each check a file with one hole opened and prove it fails."""

from __future__ import annotations

import pytest

from tests.infra.compose_check import (
    COMPOSE,
    INFRA,
    allowed_hosts_problems,
    artifact_problems,
    auth_problems,
    env_example,
    image_problems,
    policy_problems,
    port_problems,
    published_ports,
    render,
    secret_problems,
)


@pytest.fixture(scope="module")
def model() -> dict:
    return render()


def test_every_published_port_is_on_loopback(model: dict) -> None:
    ports = published_ports(model)
    assert {svc for svc, _, _ in ports} == {"minio", "mlflow", "prefect-server"}
    assert port_problems(model) == []


def test_mlflow_and_prefect_require_auth_and_clients_sign_in(model: dict) -> None:
    assert auth_problems(model) == []


def test_no_inline_secret_and_no_shared_root_key(model: dict) -> None:
    assert secret_problems(model) == []


def test_minio_policies_are_least_privilege() -> None:
    assert policy_problems() == []


def test_image_is_non_root_and_the_build_context_has_no_secrets() -> None:
    assert image_problems() == []


def test_mlflow_proxies_artifacts_and_no_client_holds_an_artifact_key(model: dict) -> None:
    assert artifact_problems(model) == []
    command = " ".join(model["services"]["mlflow"]["command"])
    assert "--serve-artifacts --artifacts-destination=s3://mlflow/artifacts" in command
    assert "--default-artifact-root" not in command  # new experiments: mlflow-artifacts:/
    # Kubernetes pods (the worker's ConfigMap) are not pointed at the artifact store either
    configmap = (INFRA / "k8s" / "babelrs-env.yaml").read_text().split("\n---")[0]
    assert "MLFLOW_S3_ENDPOINT_URL" not in configmap


def test_mlflow_allowed_hosts_come_from_the_environment_with_a_safe_default(model: dict) -> None:
    assert allowed_hosts_problems(model) == []
    default = render(env={k: v for k, v in env_example().items()
                          if k != "MLFLOW_SERVER_ALLOWED_HOSTS"})  # fmt: skip
    hosts = default["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert hosts == "mlflow,mlflow:5000,localhost:5000,127.0.0.1:5000"  # unset in infra/.env
    custom = render(env={**env_example(), "MLFLOW_SERVER_ALLOWED_HOSTS": "mlflow.example.org"})
    assert custom["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] == (
        "mlflow.example.org"
    )
    assert allowed_hosts_problems(custom) == []


# -- each check catches the hole it is about --------------------------------------------------


def test_opting_in_to_all_interfaces_is_caught() -> None:
    wide = render(env={**env_example(), "BIND_ADDR": "0.0.0.0"})
    assert sorted(port_problems(wide)) == [
        "minio: port 9000 published on 0.0.0.0",
        "minio: port 9001 published on 0.0.0.0",
        "mlflow: port 5000 published on 0.0.0.0",
        "prefect-server: port 4200 published on 0.0.0.0",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"${BIND_ADDR:-127.0.0.1}:5000:5000"',
            '"5000:5000"',
            "mlflow: port 5000 published on all",
        ),
        ("--app-name basic-auth ", "", "mlflow: MLflow without its basic-auth app"),
        (
            "      PREFECT_SERVER_API_AUTH_STRING_FILE: /run/secrets/prefect_auth_string\n",
            "",
            "prefect-server: Prefect server without PREFECT_SERVER_API_AUTH_STRING",
        ),
        (
            "      PREFECT_API_AUTH_STRING_FILE: /run/secrets/prefect_auth_string\n",
            "",
            "prefect-worker: Prefect client without PREFECT_API_AUTH_STRING_FILE",
        ),
        (
            "    secrets: [prefect_auth_string, mlflow_worker_password, s3_worker.ini]\n",
            "    secrets: [prefect_auth_string, s3_worker.ini]\n",
            "prefect-worker: MLflow client without its user and password file",
        ),
    ],
)
def test_an_open_port_or_a_missing_auth_is_caught(old: str, new: str, expected: str) -> None:
    text = COMPOSE.read_text()
    assert old in text
    model = render(text.replace(old, new))
    problems = port_problems(model) + auth_problems(model)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n",
            "      POSTGRES_PASSWORD: ${POSTGRES_USER}-pw\n",
            "postgres: secret POSTGRES_PASSWORD set inline",
        ),
        (
            "        prefect worker start --pool babelrs-process\n",
            "        PREFECT_API_AUTH_STRING=a:pw prefect worker start --pool babelrs-process\n",
            "prefect-worker: a secret value on the command line",
        ),
        (
            "      AWS_SHARED_CREDENTIALS_FILE: /run/secrets/s3_mlflow.ini\n",
            "      AWS_SHARED_CREDENTIALS_FILE: /run/secrets/s3_worker.ini\n",
            "mlflow, prefect-worker share the S3 key",
        ),
        (
            "      MLFLOW_TRACKING_URI: ${MLFLOW_TRACKING_URI}\n      MLFLOW_TRACKING_USERNAME: "
            "${MLFLOW_TRACKING_USERNAME}\n",
            "      MLFLOW_TRACKING_URI: ${MLFLOW_TRACKING_URI}\n      MLFLOW_TRACKING_USERNAME: "
            "${MLFLOW_TRACKING_USERNAME}\n      MINIO_ROOT_USER: ${MINIO_ROOT_USER}\n",
            "prefect-worker: a client holds MinIO's root credentials",
        ),
    ],
)
def test_an_inline_secret_or_a_shared_key_is_caught(old: str, new: str, expected: str) -> None:
    text = COMPOSE.read_text()
    assert old in text, old
    problems = secret_problems(render(text.replace(old, new)))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "--serve-artifacts --artifacts-destination=s3://mlflow/artifacts",
            "--default-artifact-root=s3://mlflow/artifacts --no-serve-artifacts",
            "mlflow: MLflow without --serve-artifacts",
        ),
        (
            "--serve-artifacts --artifacts-destination=s3://mlflow/artifacts",
            "--serve-artifacts --artifacts-destination=s3://mlflow/artifacts "
            "--default-artifact-root=s3://mlflow/artifacts",
            "mlflow: --default-artifact-root sends clients to the store",
        ),
        (
            "      MLFLOW_TRACKING_PASSWORD_FILE: /run/secrets/mlflow_worker_password\n",
            "      MLFLOW_TRACKING_PASSWORD_FILE: /run/secrets/mlflow_worker_password\n"
            "      MLFLOW_S3_ENDPOINT_URL: ${MLFLOW_S3_ENDPOINT_URL}\n",
            "prefect-worker: a client configured for MLflow's artifact store",
        ),
    ],
)
def test_a_client_side_artifact_store_is_caught(old: str, new: str, expected: str) -> None:
    text = COMPOSE.read_text()
    assert old in text, old
    problems = artifact_problems(render(text.replace(old, new)))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_worker_key_on_the_artifact_bucket_is_caught(model: dict, tmp_path) -> None:
    for path in (INFRA / "minio" / "policies").glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    worker = tmp_path / "babelrs-worker.json"
    worker.write_text(worker.read_text().replace('"arn:aws:s3:::babelrs-dvc/*"',
                                                 '"arn:aws:s3:::babelrs-dvc/*", '
                                                 '"arn:aws:s3:::mlflow/*"'))  # fmt: skip
    assert artifact_problems(model, tmp_path) == [
        "babelrs-worker: MinIO access to artifact bucket(s) ['mlflow']"
    ]


@pytest.mark.parametrize(
    ("env_value", "old", "new", "expected"),
    [
        ("*", None, None, "mlflow: MLFLOW_SERVER_ALLOWED_HOSTS allows every host"),
        (
            None,
            '--allowed-hosts="$${MLFLOW_SERVER_ALLOWED_HOSTS}"',
            "--allowed-hosts=mlflow:5000",
            "mlflow: --allowed-hosts is not taken from $MLFLOW_SERVER_ALLOWED_HOSTS",
        ),
        (
            None,
            '--allowed-hosts="$${MLFLOW_SERVER_ALLOWED_HOSTS}"',
            "",
            "mlflow: --allowed-hosts is not taken from $MLFLOW_SERVER_ALLOWED_HOSTS",
        ),
    ],
)
def test_open_allowed_hosts_are_caught(env_value, old, new, expected: str) -> None:
    text = COMPOSE.read_text()
    if old is not None:
        assert old in text, old
        text = text.replace(old, new)
    env = dict(env_example())
    if env_value is not None:
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = env_value
    problems = allowed_hosts_problems(render(text, env))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_wide_policy_a_root_image_and_a_leaky_context_are_caught(tmp_path) -> None:
    (tmp_path / "babelrs-reader.json").write_text(
        '{"Statement": [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:*"],'
        ' "Resource": ["arn:aws:s3:::*"]}]}'
    )
    assert policy_problems(tmp_path) == [
        "babelrs-reader.json: action s3:PutObject",
        "babelrs-reader.json: action s3:*",
        "babelrs-reader.json: resource arn:aws:s3:::*",
    ]
    root_image = "FROM a AS build\nUSER babelrs\nFROM b\nCMD x\n"
    assert image_problems(root_image, ".git\n") == [
        "the final image stage runs as root",
        *(
            f".dockerignore does not exclude {p}"
            for p in ("infra/.env", "infra/secrets", ".venv", "outputs", "mlruns", "data/raw")
        ),
    ]
