"""Model URIs that do not resolve: one message naming what exists, never a traceback.

A real MLflow store (SQLite under tmp_path) holds a registered model whose only version the gate
rejected, as after a default run that missed the floor; the unreachable server is a loopback port
nobody listens on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from babelrs_core.registry.consumer import ModelLoadError, load_model
from tests.servers import free_port

BABELRS = Path(sys.executable).with_name("babelrs")
NAME = "babelrs-detector"
REJECTED = "first version: H-mAP 0.54 < floor 20.00"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registry with version 1 (gate rejected, alias challenger) and version 2 (no gate)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    client.create_registered_model(NAME)
    source = tmp_path / "model"
    source.mkdir()
    v1 = client.create_model_version(NAME, str(source), tags={"gate.decision": "rejected",
                                                              "gate.reason": REJECTED})  # fmt: skip
    client.create_model_version(NAME, str(source))
    client.set_registered_model_alias(NAME, "challenger", v1.version)
    return uri


def _error(uri: str) -> str:
    with pytest.raises(ModelLoadError) as err:
        load_model(uri)
    return str(err.value)


def test_no_champion_names_the_versions_and_their_gate_decisions(store: str) -> None:
    msg = _error(f"models:/{NAME}@champion")
    assert f"no version of '{NAME}' has the alias 'champion'" in msg
    assert "@challenger -> 1" in msg
    assert f"version 1: gate rejected ({REJECTED})" in msg
    assert "version 2: not put through the gate" in msg
    assert f"--model models:/{NAME}/2" in msg


def test_unknown_model_version_and_uri(store: str) -> None:
    msg = _error("models:/nosuch-model@champion")
    assert "no registered model 'nosuch-model'" in msg and f"registered: {NAME}" in msg
    msg = _error(f"models:/{NAME}/7")
    assert f"'{NAME}' has no version 7" in msg and "version 1: gate rejected" in msg
    msg = _error("foo:bar")
    assert msg.startswith("foo:bar: not a model URI") and "models:/<name>@<alias>" in msg


def test_unreachable_server_is_named_and_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(ModelLoadError) as err:
        load_model(f"models:/{NAME}@champion")
    assert f"cannot reach the MLflow tracking server {uri}" in str(err.value)
    assert err.value.transient


def test_cli_prints_one_line_and_debug_shows_the_traceback(store: str, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "scene.png"
    Image.new("L", (32, 32), 90).save(image)
    argv = ["predict", "--model", f"models:/{NAME}@champion", "--out", str(tmp_path / "o"),
            str(image)]  # fmt: skip
    plain = subprocess.run([str(BABELRS), *argv], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1, plain.stderr
    assert "Traceback" not in plain.stderr
    assert "error: models:/babelrs-detector@champion: no version" in plain.stderr
    assert f"version 1: gate rejected ({REJECTED})" in plain.stderr
    debug = subprocess.run([str(BABELRS), "--debug", *argv], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ModelLoadError" in debug.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--modality": "xyz"}, "error: unknown modality 'xyz'; use one of: dota, dronevehicle"),
        ({"image": "missing.png"}, "missing.png: image file not found"),
    ],
)
def test_cli_bad_modality_or_image_before_any_model(
    store: str, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    from PIL import Image

    image = tmp_path / "scene.png"
    Image.new("L", (32, 32), 90).save(image)
    image_arg = str(tmp_path / change["image"]) if "image" in change else str(image)
    argv = ["predict", "--model", f"models:/{NAME}@champion", "--modality",
            change.get("--modality", "sar"), image_arg]  # fmt: skip
    res = subprocess.run([str(BABELRS), *argv], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
