"""One list of environment variables (babelrs_core/settings_env.py), checked both ways against
the code and the deployment files under infra/ (compose, Kubernetes, .env.example, Dockerfile);
the compose file and the manifests parse. (infra/local/ holds the embedded default's scripts,
whose own knobs are not deployment settings.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from babelrs_core import settings_env
from babelrs_core.settings_env import ENV

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CODE = [*sorted((ROOT / "babelrs_core").rglob("*.py")), *sorted((ROOT / "flows").glob("*.py"))]
NAME = r"[A-Z][A-Z0-9_]+"
READ_CALL = re.compile(rf"""\bread\(\s*["']({NAME})["']""")
READ_CONST = re.compile(rf"""^([A-Z_]+)\s*=\s*["']({NAME})["']""", re.M)
ENVVAR_OPT = re.compile(rf"""envvar=["']({NAME})["']""")
DIRECT = re.compile(r"os\.environ\.get|os\.getenv|os\.environ\[")
INTERP = re.compile(rf"\$\{{({NAME})(?::?-[^}}]*)?\}}")  # ${X} and ${X:-default}


def _code_reads() -> set[str]:
    """Names the code reads: read("X"), constants passed to read(), typer envvar="X"."""
    found: set[str] = set()
    for path in CODE:
        text = path.read_text()
        found |= set(READ_CALL.findall(text)) | set(ENVVAR_OPT.findall(text))
        consts = dict(READ_CONST.findall(text))
        for const, name in consts.items():
            if re.search(rf"\bread\(\s*{const}\b", text) or f"in {const}" in text:
                found.add(name)
        for m in re.finditer(r"([A-Z_]+)\s*=\s*\(([^)]*)\)", text):  # tuples of names
            loop = re.search(rf"\bfor (\w+) in {m.group(1)}\b", text)
            if loop and re.search(rf"\bread\({loop.group(1)}\)", text):
                found |= set(re.findall(rf"""["']({NAME})["']""", m.group(2)))
    return found


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    out = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _infra_names() -> dict[str, set[str]]:
    """Every environment name each deployment file sets or interpolates."""
    compose_text = (INFRA / "docker-compose.yml").read_text()
    names = {"compose": set(INTERP.findall(compose_text))}
    for svc in _compose()["services"].values():
        names["compose"] |= set(svc.get("environment") or {})
    k8s = set()
    for doc in yaml.safe_load_all((INFRA / "k8s" / "babelrs-env.yaml").read_text()):
        k8s |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
    names["k8s"] = k8s
    multinode = (INFRA / "k8s" / "finetune-multinode.yaml").read_text()  # its node script
    names["k8s multi-node"] = set(re.findall(rf"\bexport ({NAME})=", multinode))
    docker = (INFRA / "Dockerfile").read_text()
    env_lines = re.findall(r"^ENV (.*(?:\\\n.*)*)", docker, re.M)
    names["Dockerfile"] = {n for block in env_lines for n in re.findall(rf"({NAME})=", block)} - {
        "FORCE_CUDA",
        "TORCH_CUDA_ARCH_LIST",
        "BABELRS_WHEELHOUSE",
        "PATH",
    }  # build-time only
    names[".env.example"] = set(_env_example())
    return names


def test_code_reads_the_environment_only_through_the_list() -> None:
    direct = [p for p in CODE if p.name != "settings_env.py" and DIRECT.search(p.read_text())]
    assert direct == [], f"read environment variables with settings_env.read: {direct}"
    reads = _code_reads()
    assert reads <= set(ENV), sorted(reads - set(ENV))
    ours = {n for n, v in ENV.items() if v.reader == "babelrs"}
    assert ours <= reads, f"listed as read by babelrs but never read: {sorted(ours - reads)}"
    with pytest.raises(KeyError, match="NOT_A_BABELRS_SETTING"):
        settings_env.read("NOT_A_BABELRS_SETTING")


def test_every_infra_name_is_listed_and_every_deploy_setting_is_in_env_example() -> None:
    for where, names in _infra_names().items():
        assert names <= set(ENV), f"{where}: not in settings_env.ENV_VARS: {names - set(ENV)}"
    in_env_file = {n for n, v in ENV.items() if v.deploy and v.via == "env"}
    assert set(_env_example()) == in_env_file
    assert {v.via for v in ENV.values()} <= {"env", "secret", "compose", "manual"}
    runtime = {n for n, v in ENV.items() if not v.deploy}  # set by torchrun / the runners
    assert not runtime & set().union(*_infra_names().values())


def test_compose_services_and_the_gpu_worker() -> None:
    services = _compose()["services"]
    assert {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker"} <= set(services)
    worker = services["prefect-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "prefect worker start --pool babelrs-process" in " ".join(worker["command"])
    mlflow = " ".join(services["mlflow"]["command"])
    assert 'MLFLOW_BACKEND_STORE_URI="postgresql://' in mlflow and "s3://" in mlflow
    prefect_db = services["prefect-server"]["environment"]
    assert prefect_db["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert prefect_db["PREFECT_SERVER_DATABASE_NAME"] == "prefect"
    assert "CREATE DATABASE prefect" in (INFRA / "postgres" / "init.sql").read_text()
    # the process pool is the one prefect.yaml's deployment uses
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert deployments[0]["work_pool"]["name"] == "babelrs-process"
    # no secret in the example, and the Kubernetes Secret holds placeholders only
    assert not {n for n in _env_example() if ENV[n].secret}
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "babelrs-env.yaml").read_text()))
    secret_values = docs[1]["stringData"]
    passwords = {n for n in secret_values if "SECRET" in n or "PASSWORD" in n or "AUTH" in n}
    assert passwords and all(secret_values[n] == "change-me" for n in passwords)


def test_each_secret_reaches_its_service_as_a_file() -> None:
    """A ``via="secret"`` variable: compose passes ``<NAME>_FILE`` (a docker secret), and either
    the service reads that itself (PostgreSQL, MinIO) or the image's entrypoint exports it."""
    secret_vars = {n for n, v in ENV.items() if v.deploy and v.via == "secret"}
    assert all(ENV[n].secret for n in secret_vars)
    assert all(v.via in ("secret", "manual") for v in ENV.values() if v.secret and v.deploy)
    compose_env = {
        k: str(v)
        for svc in _compose()["services"].values()
        for k, v in (svc.get("environment") or {}).items()
    }
    entrypoint = (INFRA / "entrypoint.sh").read_text()
    for name in sorted(secret_vars):
        assert f"{name}_FILE" in compose_env, f"compose never passes {name}_FILE"
        assert name not in compose_env, f"{name} is set in the compose file itself"
        assert ENV[f"{name}_FILE"].via == "compose"
        assert ENV[name].reader in ("postgres", "minio") or re.search(rf"\b{name}\b", entrypoint)


def test_kubernetes_manifests_and_gpu_job_template_parse() -> None:
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "babelrs-env.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Secret"]
    values = yaml.safe_load((INFRA / "k8s" / "prefect-worker-values.yaml").read_text())
    assert values["worker"]["config"]["type"] == "kubernetes"
    assert values["worker"]["extraEnvVarsCM"] == docs[0]["metadata"]["name"]
    assert values["worker"]["extraEnvVarsSecret"] == docs[1]["metadata"]["name"]
    template = json.loads((INFRA / "k8s" / "gpu-job-template.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {docs[0]["metadata"]["name"], docs[1]["metadata"]["name"]}
    placeholders = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"])
