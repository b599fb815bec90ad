"""Render ``infra/docker-compose.yml`` and list what would let someone in.

Rendering: ``docker compose config --format json`` when the Compose plugin is installed, else the
YAML with Compose's interpolation (``${X}``, ``${X:-default}``, ``${X-default}``, ``$$``) done here
from the given environment (``infra/.env.example`` by default). The checks return lists of
problems (empty: fine), so tests can also show that each check catches a bad file.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
#: names whose inline value would be a secret (a ``*_FILE`` / path names where the secret is)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|ACCESS_KEY|TOKEN")


def env_example() -> dict[str, str]:
    """``KEY=value`` lines of ``infra/.env.example``."""
    out = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (unset without default: empty, as Compose does)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        return value or ""

    return _VAR.sub(sub, text)


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def render(text: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose model (``services`` etc.) of ``text`` (default: the file) under ``env``."""
    env = dict(env_example() if env is None else env)
    text = COMPOSE.read_text() if text is None else text
    if _compose_plugin():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "docker-compose.yml"
            path.write_text(text)
            (Path(tmp) / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            # the relative paths (secrets, build context) resolve against the real infra/
            args = ["docker", "compose", "--project-directory", str(INFRA), "-f", str(path)]
            args += ["--env-file", str(Path(tmp) / ".env"), "config", "--format", "json"]
            clean = {k: v for k, v in os.environ.items() if k not in env}
            out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=clean)
            if out.returncode == 0:
                return json.loads(out.stdout)
    return yaml.safe_load(interpolate(text, env))


# -- ports --------------------------------------------------------------------------------------


def published_ports(model: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(service, host_ip, published)`` of every published port (short and long syntax)."""
    out = []
    for name, svc in model["services"].items():
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                if port.get("published") in (None, ""):
                    continue
                out.append((name, str(port.get("host_ip") or ""), str(port["published"])))
                continue
            spec = str(port).split("/")[0]
            parts = spec.rsplit(":", 2)
            if len(parts) == 1:  # "5000": a random host port on every interface
                out.append((name, "", "random"))
            elif len(parts) == 2:  # "5000:5000": every interface
                out.append((name, "", parts[0]))
            else:
                out.append((name, parts[0].strip("[]"), parts[1]))
    return out


def port_problems(model: Mapping[str, Any]) -> list[str]:
    """Published ports that listen beyond this host (no host IP, 0.0.0.0, ::, a LAN address)."""
    return [
        f"{svc}: port {published} published on {host or 'all interfaces'}"
        for svc, host, published in published_ports(model)
        if host not in LOOPBACK
    ]


# -- authentication -----------------------------------------------------------------------------


def _command(svc: Mapping[str, Any]) -> str:
    cmd = svc.get("command") or ""
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def _env(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _secrets(svc: Mapping[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in svc.get("secrets") or []}


def _secret_file_ok(svc: Mapping[str, Any], var: str) -> bool:
    """``var`` names a file under /run/secrets/ that the service mounts as a docker secret."""
    path = _env(svc).get(var, "")
    return path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") in _secrets(svc)


def _repo_path(container_path: str) -> Path:
    return ROOT / container_path.removeprefix("/opt/babelrs/")


def auth_problems(model: Mapping[str, Any]) -> list[str]:
    """MLflow / Prefect servers without authentication, and clients that could not sign in."""
    problems = []
    services = model["services"]
    mlflow = {n: s for n, s in services.items() if "mlflow server" in _command(s)}
    prefect = {n: s for n, s in services.items() if "prefect server start" in _command(s)}
    prefect |= {n: s for n, s in services.items() if _command(s).startswith("prefect server")}
    if not mlflow or not prefect:
        problems.append(f"no MLflow ({sorted(mlflow)}) or Prefect ({sorted(prefect)}) server")
    for name, svc in mlflow.items():
        if "--app-name basic-auth" not in _command(svc):
            problems.append(f"{name}: MLflow without its basic-auth app (--app-name basic-auth)")
        config = _env(svc).get("MLFLOW_AUTH_CONFIG_PATH", "")
        if not config or not _repo_path(config).is_file():
            problems.append(f"{name}: MLFLOW_AUTH_CONFIG_PATH {config!r} is not a file of infra/")
        else:
            ini = configparser.ConfigParser()
            ini.read(_repo_path(config))
            if ini["mlflow"]["default_permission"] not in ("READ", "NO_PERMISSIONS"):
                problems.append(f"{name}: default_permission {ini['mlflow']['default_permission']}")
        for var in ("MLFLOW_AUTH_ADMIN_PASSWORD_FILE", "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE"):
            if not _secret_file_ok(svc, var):
                problems.append(f"{name}: {var} is not a mounted docker secret")
    for name, svc in prefect.items():
        if not _secret_file_ok(svc, "PREFECT_SERVER_API_AUTH_STRING_FILE"):
            problems.append(f"{name}: Prefect server without PREFECT_SERVER_API_AUTH_STRING")
    for name, svc in services.items():
        env = _env(svc)
        if "PREFECT_API_URL" in env and not _secret_file_ok(svc, "PREFECT_API_AUTH_STRING_FILE"):
            problems.append(f"{name}: Prefect client without PREFECT_API_AUTH_STRING_FILE")
        if "MLFLOW_TRACKING_URI" in env and not (
            env.get("MLFLOW_TRACKING_USERNAME")
            and _secret_file_ok(svc, "MLFLOW_TRACKING_PASSWORD_FILE")
        ):
            problems.append(f"{name}: MLflow client without its user and password file")
    return problems


# -- secrets and object-store users ---------------------------------------------------------------


def secret_problems(model: Mapping[str, Any]) -> list[str]:
    """Secrets set inline (environment or command line) and clients using MinIO's root key."""
    problems = []
    for name, svc in model["services"].items():
        env = _env(svc)
        for key, value in env.items():
            if _SECRET_NAME.search(key) and not key.endswith(("_FILE", "_PATH")) and value:
                problems.append(f"{name}: secret {key} set inline")
        command = _command(svc)
        if re.search(r"(PASSWORD|SECRET|AUTH_STRING)[A-Z_]*=[^$\s\"]", command):
            problems.append(f"{name}: a secret value on the command line")
        if "://" in command and re.search(r"://[^/\s:$]+:[^@\s$]+@", command):
            problems.append(f"{name}: credentials inside a URL on the command line")
        is_minio = "minio" in str(svc.get("image", "")).split("/")[0]
        if not is_minio and ("minio_root_password" in _secrets(svc) or "MINIO_ROOT_USER" in env):
            problems.append(f"{name}: a client holds MinIO's root credentials")
    clients = {
        name: _env(svc)["AWS_SHARED_CREDENTIALS_FILE"]
        for name, svc in model["services"].items()
        if "AWS_SHARED_CREDENTIALS_FILE" in _env(svc)
    }
    for name, path in clients.items():
        if not _secret_file_ok(model["services"][name], "AWS_SHARED_CREDENTIALS_FILE"):
            problems.append(f"{name}: AWS_SHARED_CREDENTIALS_FILE {path} is not a docker secret")
    by_key = {}
    for name, path in clients.items():
        by_key.setdefault(path, []).append(name)
    # the worker's key serves the worker and the one-shot access check of its bucket only
    for path, names in by_key.items():
        long_lived = [n for n in names if model["services"][n].get("restart", "no") != "no"]
        if len(long_lived) > 1:
            problems.append(f"{', '.join(long_lived)} share the S3 key {path}")
    return problems


#: what a client may do: list and read, and (the worker only) write objects; no bucket or admin
#: actions (creating buckets and users is minio-init's job, with the root key)
READ_ACTIONS = {"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"}
WRITE_ACTIONS = {
    "s3:ListBucketMultipartUploads",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
}
WRITERS = {"babelrs-worker", "babelrs-mlflow"}  # the worker: DVC; the MLflow server: artifacts


def policy_problems(folder: Path = INFRA / "minio" / "policies") -> list[str]:
    """MinIO policies granting more than listing / reading (writing: the worker, the MLflow
    server) of babelrs' two buckets."""
    problems = []
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        allowed = READ_ACTIONS | (WRITE_ACTIONS if path.stem in WRITERS else set())
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if st.get("Effect") != "Allow":
                continue
            problems += [f"{path.name}: action {a}" for a in actions if a not in allowed]
            for res in resources:
                bucket = res.removeprefix("arn:aws:s3:::").split("/")[0]
                if bucket not in ("babelrs-dvc", "mlflow"):
                    problems.append(f"{path.name}: resource {res}")
    return problems


# -- MLflow artifacts (proxied) and allowed hosts ------------------------------------------------

#: the MinIO user of the MLflow server: the only one that may touch the artifact bucket
MLFLOW_S3_USER = "babelrs-mlflow"
_ARTIFACTS_DESTINATION = re.compile(r"--artifacts-destination[= ]s3://([^/\s]+)")


def _policy_buckets(folder: Path) -> dict[str, set[str]]:
    """MinIO user (policy file stem) -> buckets its Allow statements name."""
    out: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.json")):
        for st in json.loads(path.read_text())["Statement"]:
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if st.get("Effect") == "Allow":
                out.setdefault(path.stem, set()).update(
                    r.removeprefix("arn:aws:s3:::").split("/")[0] for r in resources
                )
    return out


def artifact_problems(
    model: Mapping[str, Any], policies: Path = INFRA / "minio" / "policies"
) -> list[str]:
    """One artifact mode, proxied: the MLflow server runs with ``--serve-artifacts`` and an
    ``s3://`` ``--artifacts-destination`` (so new experiments get ``mlflow-artifacts:/``), no
    ``--default-artifact-root`` pointing clients at S3; no other service is configured for the
    artifact store (``MLFLOW_S3_ENDPOINT_URL``) and no MinIO user but the server's may touch its
    bucket."""
    problems = []
    services = model["services"]
    servers = {n: s for n, s in services.items() if "mlflow server" in _command(s)}
    buckets = set()
    for name, svc in servers.items():
        command = _command(svc)
        if "--serve-artifacts" not in command.split() or "--no-serve-artifacts" in command:
            problems.append(f"{name}: MLflow without --serve-artifacts (clients would need S3)")
        if re.search(r"--default-artifact-root[= ](?!mlflow-artifacts:)", command):
            problems.append(f"{name}: --default-artifact-root sends clients to the store itself")
        match = _ARTIFACTS_DESTINATION.search(command)
        if match is None:
            problems.append(f"{name}: no --artifacts-destination s3://<bucket>")
        else:
            buckets.add(match[1])
        creds = _env(svc).get("AWS_SHARED_CREDENTIALS_FILE", "")
        if Path(creds).name != f"s3_{MLFLOW_S3_USER.removeprefix('babelrs-')}.ini":
            problems.append(f"{name}: the MLflow server does not use the {MLFLOW_S3_USER} key")
    for name, svc in services.items():
        if name not in servers and "MLFLOW_S3_ENDPOINT_URL" in _env(svc):
            problems.append(f"{name}: a client configured for MLflow's artifact store")
    for user, names in _policy_buckets(policies).items():
        if user != MLFLOW_S3_USER and names & buckets:
            problems.append(f"{user}: MinIO access to artifact bucket(s) {sorted(names & buckets)}")
    return problems


ALLOWED_HOSTS_VAR = "MLFLOW_SERVER_ALLOWED_HOSTS"


def allowed_hosts_problems(model: Mapping[str, Any]) -> list[str]:
    """The MLflow server's ``--allowed-hosts`` comes from ``MLFLOW_SERVER_ALLOWED_HOSTS`` (set by
    the service environment, the operator's ``infra/.env``), and the value rendered is a list of
    names, never ``*`` (every host)."""
    problems = []
    for name, svc in model["services"].items():
        command = _command(svc)
        if "mlflow server" not in command:
            continue
        if not re.search(rf'--allowed-hosts[= ]"?\$\{{?{ALLOWED_HOSTS_VAR}\b', command):
            problems.append(f"{name}: --allowed-hosts is not taken from ${ALLOWED_HOSTS_VAR}")
        value = _env(svc).get(ALLOWED_HOSTS_VAR, "")
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            problems.append(f"{name}: {ALLOWED_HOSTS_VAR} is empty")
        if any(h == "*" or h.startswith("*") for h in hosts):
            problems.append(f"{name}: {ALLOWED_HOSTS_VAR} allows every host ({value})")
    return problems


# -- the image ----------------------------------------------------------------------------------


def image_problems(dockerfile: str | None = None, dockerignore: str | None = None) -> list[str]:
    """A final image stage running as root; a build context that would ship secrets or state."""
    problems = []
    text = (INFRA / "Dockerfile").read_text() if dockerfile is None else dockerfile
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final image stage runs as {users[-1] if users else 'root'}")
    if dockerignore is None:
        path = ROOT / ".dockerignore"
        dockerignore = path.read_text() if path.exists() else ""
    lines = {ln.strip().rstrip("/") for ln in dockerignore.splitlines()}
    needed = ["infra/.env", "infra/secrets", ".git", ".venv", "outputs", "mlruns", "data/raw"]
    problems += [f".dockerignore does not exclude {p}" for p in needed if p not in lines]
    return problems
