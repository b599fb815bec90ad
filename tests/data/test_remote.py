"""DVC remotes: the committed config, and ``babelrs data remote bootstrap`` against a real local
S3 server (moto_server on 127.0.0.1; nothing mocked)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babelrs_core.cli import app
from babelrs_core.data.remote import (
    PROBE_KEY,
    RemoteError,
    bootstrap,
    dvc_remote_config,
    resolve_s3,
)
from tests.servers import aws_env, free_port, s3_client, start_moto

ROOT = Path(__file__).resolve().parents[2]
SECRET = "do-not-print-this-secret-0123456789"


@pytest.fixture(scope="module")
def s3():
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A folder with a copy of the committed DVC configuration."""
    (tmp_path / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, tmp_path / ".dvc" / name)
    return tmp_path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, s3) -> dict[str, str]:
    """AWS environment for the local server (dummy credentials, no machine-wide AWS files)."""
    values = aws_env(s3.url)
    for key in [k for k in values if k.startswith("AWS_")]:
        monkeypatch.setenv(key, values[key])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    bucket = f"babelrs-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("BABELRS_S3_BUCKET", bucket)
    return {**values, "AWS_SECRET_ACCESS_KEY": SECRET, "BABELRS_S3_BUCKET": bucket}


def test_committed_config_has_a_local_default_and_no_secrets() -> None:
    from configobj import ConfigObj  # what DVC parses its config with

    config = ConfigObj(str(ROOT / ".dvc" / "config"))  # the committed file, as written
    assert config["core"]["remote"] == "local"
    assert config["core"]["analytics"] == "false"  # no usage reports from CI or laptops
    local, s3 = config['remote "local"'], config['remote "s3"']
    assert local["url"].startswith("~/")  # works on any machine and in CI, outside the clone
    assert s3["url"].startswith("s3://")
    forbidden = {"endpointurl", "access_key_id", "secret_access_key", "session_token"}
    assert not forbidden & {k for section in config.values() for k in section}
    ignored = (ROOT / ".dvc" / ".gitignore").read_text().split()
    assert {"/config.local", "/cache", "/tmp"} <= set(ignored)
    assert (ROOT / ".dvcignore").is_file()


def test_bootstrap_creates_the_bucket_then_is_idempotent(repo: Path, env, s3) -> None:
    first = bootstrap(repo)
    assert first.created_bucket and first.bucket == env["BABELRS_S3_BUCKET"]
    assert first.endpoint == s3.url and first.credentials == "env"
    assert first.url == f"s3://{env['BABELRS_S3_BUCKET']}/dvc"
    assert not bootstrap(repo).created_bucket
    listing = s3_client(s3.url).list_objects_v2(Bucket=first.bucket)
    assert listing.get("KeyCount", 0) == 0  # the access probe cleaned up after itself
    assert PROBE_KEY.startswith(".")


def test_bootstrap_save_writes_only_the_git_ignored_local_config(repo: Path, env) -> None:
    committed = (repo / ".dvc" / "config").read_text()
    bootstrap(repo, save=True)
    assert (repo / ".dvc" / "config").read_text() == committed
    local = (repo / ".dvc" / "config.local").read_text()
    assert env["BABELRS_S3_BUCKET"] in local and SECRET not in local
    assert dvc_remote_config(repo, "s3")["url"] == f"s3://{env['BABELRS_S3_BUCKET']}/dvc"


def test_cli_prints_the_credential_source_never_the_secret(repo: Path, env) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)  # the command works on the DVC repo around the current directory
        result = CliRunner().invoke(app, ["data", "remote", "bootstrap"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["credentials"] == "env" and report["access"] == "read/write/delete ok"
    assert SECRET not in result.output and "testing" not in result.output


def test_unreachable_endpoint_is_named(repo: Path, env, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteError, match=f"cannot reach the S3 endpoint {dead}"):
        bootstrap(repo, endpoint=dead, timeout_s=2)
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["data", "remote", "bootstrap", "--endpoint", dead])
    assert result.exit_code == 1
    assert f"cannot reach the S3 endpoint {dead}" in result.output
    assert "Traceback" not in result.output and SECRET not in result.output


def test_missing_credentials_are_explained(
    repo: Path, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RemoteError, match="no AWS credentials found") as info:
        bootstrap(repo)
    assert "AWS_ACCESS_KEY_ID" in str(info.value)


def test_bucket_and_endpoint_resolution(repo: Path, env, monkeypatch: pytest.MonkeyPatch) -> None:
    target = resolve_s3(repo, bucket="explicit-bucket", endpoint="http://127.0.0.1:1")
    assert (target.bucket, target.endpoint, target.prefix) == (
        "explicit-bucket",
        "http://127.0.0.1:1",
        "dvc",
    )
    monkeypatch.delenv("BABELRS_S3_BUCKET")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    target = resolve_s3(repo)
    assert (target.bucket, target.endpoint) == ("babelrs-dvc", "http://127.0.0.1:2")


def test_wrong_remote_names_are_explained(repo: Path, env) -> None:
    with pytest.raises(RemoteError, match="not an s3:// remote"):
        bootstrap(repo, remote="local")
    with pytest.raises(RemoteError, match=r"no DVC remote named 'nope' \(configured: local, s3\)"):
        bootstrap(repo, remote="nope")
    with pytest.raises(RemoteError, match="not inside a DVC repository"):
        bootstrap(repo.parent / "elsewhere")
