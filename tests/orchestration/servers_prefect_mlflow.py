"""A real Prefect server and a real MLflow server for the orchestration tests.

Both bind to 127.0.0.1 on free ports and keep their state under a temporary folder (SQLite).
The MLflow server stores artifacts in an S3 bucket on a ``moto_server`` (:mod:`tests.servers`) and
proxies them (clients need no S3 credentials). Environments are built from scratch-cleaned copies
of ``os.environ``: no ``PREFECT_*``, ``MLFLOW_*`` or ``AWS_*`` setting of the machine leaks in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from babelrs_core.settings_env import NO_TELEMETRY_ENV, OFFLINE_ENV
from tests.servers import MotoServer, aws_env, free_port, s3_client

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
_CLEAN_PREFIXES = ("PREFECT_", "MLFLOW_", "AWS_", "BABELRS_")
#: pytest's marker of a running test: MLflow switches on test-only session checks when it is set,
#: so the processes under test would not run as they do for a user
_TEST_ONLY_VARS = ("PYTEST_CURRENT_TEST",)


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without Prefect / MLflow / AWS / babelrs settings, plus ``extra``;
    ``.venv/bin`` first on PATH and the analytics / promotional switches off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_CLEAN_PREFIXES) and k not in _TEST_ONLY_VARS
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
        **NO_TELEMETRY_ENV,
        **OFFLINE_ENV,
    )
    env.update(extra)
    return env


@dataclass
class Server:
    """A server subprocess with its URL and log file."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    health: str = ""

    def wait(self, timeout_s: float = 240.0) -> Server:
        """Block until the health URL answers 200 (stop and raise after ``timeout_s``)."""
        _wait_ok(self, self.health, timeout_s)
        return self

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, sigint_first: bool = True) -> None:
        """SIGINT (the servers' clean shutdown), then SIGTERM, then SIGKILL."""
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if sig is signal.SIGINT and not sigint_first:
                continue
            try:
                os.killpg(self.proc.pid, sig)  # the server's own children (uvicorn workers) too
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _spawn(name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    return Server(name, "", proc, log, env)


def _wait_ok(server: Server, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"{server.name} not healthy after {timeout_s:.0f} s:\n{server.tail()}")


def prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for Prefect processes with their own ``PREFECT_HOME`` (profiles, results,
    task cache records) and, for clients, the server's API URL."""
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_LOGGING_LEVEL="INFO",
        **extra,
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_prefect_server(state_dir: Path, wait: bool = True) -> Server:
    """``prefect server start`` on 127.0.0.1 (SQLite under ``state_dir``, no UI, analytics off);
    ``server.url`` is the API URL (``.../api``). ``wait=False``: call ``server.wait()`` later."""
    port = free_port()
    home = state_dir / "server-home"
    env = prefect_env(
        home,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{state_dir / 'prefect.db'}",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_ENABLED="false",
    )
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--analytics-off", "--no-ui"]
    server = _spawn("prefect server", cmd, env, state_dir / "prefect-server.log", state_dir)
    server.url = f"http://127.0.0.1:{port}/api"
    server.health = server.url + "/health"
    return server.wait() if wait else server


def make_bucket(s3: MotoServer, bucket: str) -> None:
    client = s3_client(s3.url)
    client.create_bucket(Bucket=bucket)


def bucket_keys(s3: MotoServer, bucket: str) -> set[str]:
    client = s3_client(s3.url)
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def start_mlflow_server(
    state_dir: Path, s3: MotoServer, bucket: str = "mlflow", wait: bool = True
) -> Server:
    """``mlflow server`` on 127.0.0.1: SQLite backend under ``state_dir``, artifacts proxied to
    ``s3://bucket/`` on the moto server (credentials only in the server's environment), one
    worker, no job runner. ``wait=False``: call ``server.wait()`` later."""
    make_bucket(s3, bucket)
    port = free_port()
    env = aws_env(s3.url, clean_env())
    env.update(MLFLOW_S3_ENDPOINT_URL=s3.url, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", f"s3://{bucket}/"]
    cmd += ["--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    cmd += ["--cors-allowed-origins", f"http://127.0.0.1:{port}"]
    server = _spawn("mlflow server", cmd, env, state_dir / "mlflow-server.log", state_dir)
    server.url = f"http://127.0.0.1:{port}"
    server.health = server.url + "/health"
    return server.wait() if wait else server


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a command; an ``AssertionError`` with its output when it fails."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} -> {result.returncode}\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}"
        )
    return result


#: Runs the flow in a fresh interpreter, once per kwargs mapping given, and prints one JSON line per
#: run: the flow run id, its state and the flow's return value (or the error message).
FLOW_SCRIPT = """
import json, sys
from flows.retrain import babelrs_retrain
for kwargs in json.loads(sys.argv[1]):
    state = babelrs_retrain(**kwargs, return_state=True)
    out = {"flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value}
    try:
        out["result"] = state.result()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    print("FLOW-RESULT " + json.dumps(out, default=str), flush=True)
"""


def run_flows(
    runs: list[dict], env: dict[str, str], timeout: float = 600, cwd: Path = ROOT
) -> list[dict]:
    """Run ``babelrs_retrain(**kwargs)`` for each of ``runs`` in one subprocess (in ``cwd``, this
    checkout's code); one result mapping per run."""
    result = subprocess.run(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps(runs)],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = [
        json.loads(line.removeprefix("FLOW-RESULT "))
        for line in result.stdout.splitlines()
        if line.startswith("FLOW-RESULT ")
    ]
    if len(out) != len(runs):
        raise AssertionError(
            f"flow subprocess printed {len(out)} of {len(runs)} results (rc {result.returncode})"
            f"\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return out


def run_flow(kwargs: dict, env: dict[str, str], timeout: float = 600) -> dict:
    """Run ``babelrs_retrain(**kwargs)`` in a fresh subprocess."""
    return run_flows([kwargs], env, timeout)[0]


def start_until_ready(script: Path, cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start ``bash script`` (a `make ui` / `make serve-scheduler` script) in its own session, as
    a terminal would (SIGINT reaches the script only), and read its output until it says how to
    stop it ("Ctrl-C stops") or fails ("error:"); returns the process and that output."""
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=cwd,  # the script moves to the repository root itself
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line or "error:" in line:
            break
    return proc, "".join(lines)
