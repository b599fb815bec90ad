"""``babelrs env`` (babelrs_core/shell_env.py): the printed lines, evaluated by a real bash, set
what the consumers need, and never carry a secret."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babelrs_core import shell_env as shell_env_module
from babelrs_core.cli import app
from babelrs_core.shell_env import local_store_uri, mask_uri, shell_env

VARS = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(shell_env_module, "venv_bin", lambda: None)  # PATH: its own test


def _bash_eval(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables after ``eval "$text"`` in a fresh bash (with ``env`` set before)."""
    script = 'eval "$1" && for v in "${@:2}"; do printf "%s=%s\\0" "$v" "${!v-<unset>}"; done'
    res = subprocess.run(["bash", "-c", script, "bash", text, *VARS], env={"PATH": "/usr/bin:/bin",
                         **(env or {})}, capture_output=True, text=True, check=True)  # fmt: skip
    return dict(item.split("=", 1) for item in res.stdout.split("\0") if item)


def test_default_is_the_local_store_as_an_absolute_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = shell_env(Path("outputs/mlflow"))
    want = f"sqlite:///{tmp_path.resolve()}/outputs/mlflow/mlflow.db"
    assert out.lines == [f"export MLFLOW_TRACKING_URI={want}"]
    assert out.notes == ["no MLflow store at outputs/mlflow/mlflow.db yet: run `make run` first"]
    assert not (tmp_path / "outputs").exists()  # nothing created
    assert _bash_eval(out.text())["MLFLOW_TRACKING_URI"] == want
    (tmp_path / "outputs" / "mlflow").mkdir(parents=True)
    (tmp_path / "outputs" / "mlflow" / "mlflow.db").write_bytes(b"")
    assert shell_env(Path("outputs/mlflow")).notes == []


def test_a_set_server_and_prefect_url_are_kept_and_quoting_survives_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    out = shell_env(tmp_path)
    assert out.lines == ["export MLFLOW_TRACKING_URI=http://mlflow.internal:5000",
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api"]  # fmt: skip
    assert out.notes == []
    # a store path with a space, quotes and a $: one word after eval, nothing expanded
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    odd = tmp_path / "it's a $HOME `x`"
    got = _bash_eval(shell_env(odd).text())
    assert got["MLFLOW_TRACKING_URI"] == local_store_uri(odd)


def test_the_virtualenv_bin_goes_first_on_path_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = tmp_path / "my venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "uvicorn").write_text("#!/bin/sh\necho uvicorn-here\n")
    (venv_bin / "uvicorn").chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out = shell_env(tmp_path, bin_dir=venv_bin)
    assert out.lines[1] == f"export PATH='{venv_bin}':\"$PATH\""
    script = 'eval "$1" && uvicorn'  # found by name after eval, as mlflow models serve runs it
    res = subprocess.run(["bash", "-c", script, "bash", out.text()], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    assert res.stdout == "uvicorn-here\n"
    monkeypatch.setenv("PATH", f"/usr/bin:{venv_bin}")  # already there: no line
    assert not any(line.startswith("export PATH") for line in shell_env(tmp_path, venv_bin).lines)


def test_secrets_are_never_printed_and_the_shell_keeps_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_password = "https://bob:s3cr3t-pw@mlflow.example.org/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_password)
    out = shell_env(tmp_path)
    assert "s3cr3t-pw" not in out.text() + "".join(out.notes)
    assert out.lines == ["# MLFLOW_TRACKING_URI is set (https://bob:***@mlflow.example.org/mlflow)"
                         "; kept as set: it holds a secret, never printed"]  # fmt: skip
    assert _bash_eval(out.text(), {"MLFLOW_TRACKING_URI": with_password}) == {
        "MLFLOW_TRACKING_URI": with_password, "PREFECT_API_URL": "<unset>",
        "MLFLOW_TRACKING_PASSWORD": "<unset>",
    }  # fmt: skip
    # a secret environment value inside a URL (a token in the query) is masked too
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "tok-123456")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/?token=tok-123456")
    text = shell_env(tmp_path).text()
    assert "tok-123456" not in text and "token=***" in text and text.startswith("# ")
    assert mask_uri("http://user@host:5000") == "http://user@host:5000"  # a user is no secret
    assert mask_uri("http://h:notaport/") == "http://h:notaport/"  # not a valid URL: unchanged


def test_cli_prints_only_shell_lines_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    res = CliRunner().invoke(app, ["env", "--params", str(params),
                                   "--set", "tracking.store=elsewhere/store"])  # fmt: skip
    assert res.exit_code == 0, res.output
    want = f"sqlite:///{tmp_path.resolve()}/elsewhere/store/mlflow.db"
    assert res.stdout == f"export MLFLOW_TRACKING_URI={want}\n"
    assert "babelrs env: no MLflow store at elsewhere/store/mlflow.db" in res.stderr
