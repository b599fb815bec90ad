"""The registry against a real ``mlflow server`` (SQLite backend, artifacts in S3 on a moto
server): register versions, the promotion gate's decisions and tags, a consumer process that knows
only ``models:/babelrs-detector@champion``, ``babelrs predict``, ``mlflow models serve`` over REST,
and two promotions racing in two processes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.detector.det_fakes import _draw
from tests.orchestration.servers_prefect_mlflow import (
    ROOT,
    Server,
    _spawn,
    clean_env,
    run_cli,
    start_mlflow_server,
)
from tests.registry.conftest import Trained
from tests.servers import free_port, start_moto

pytestmark = pytest.mark.slow

NAME = "babelrs-detector"
CHAMPION_URI = f"models:/{NAME}@champion"
COLS = ["x1", "y1", "x2", "y2", "score"]


@dataclass
class State:
    url: str
    trained: Trained
    tmp: Path
    versions: dict[str, str] = field(default_factory=dict)  # label -> version

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(MLFLOW_TRACKING_URI=self.url, PYTHONPATH=str(ROOT), **extra)

    def client(self):
        import mlflow

        return mlflow.MlflowClient(self.url)

    def tags(self, label: str) -> dict[str, str]:
        return self.client().get_model_version(NAME, self.versions[label]).tags


def _last_json(stdout: str) -> dict:
    """The JSON object a babelrs command prints last (libraries may print before it)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def _register(state: State, which, label: str, **extra: object) -> dict:
    from babelrs_core.registry.registry import register

    over = {"tracking.experiment": "registry-test", "registry.out_dir": str(state.tmp / label)}
    params = state.trained.params(which, **over, **extra)
    result = register(params)
    state.versions[label] = result["version"]
    return result


@pytest.fixture(scope="module")
def state(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    """v1 = worse (first version, floor 100: rejected; then promoted by the CLI with floor 0),
    v2 = better (promoted), v3 = worse (rejected against v2)."""
    from babelrs_core.pipeline import stage
    from babelrs_core.pipeline.runner import execute_stage
    from babelrs_core.tracking import Tracker

    tmp = tmp_path_factory.mktemp("registry-server")
    s3 = start_moto(log=tmp / "moto.log")
    server = start_mlflow_server(tmp, s3, "mlflow", wait=True)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", server.url)
            st = State(server.url, trained, tmp)
            # v1 through the stage runner (the model is logged in the stage's MLflow run)
            over = {"tracking.experiment": "registry-test", "registry.out_dir": str(tmp / "v1")}
            params = trained.params(trained.worse, **over, **{"registry.floor": 100.0})
            result = execute_stage(stage("register"), params, tracker=Tracker.from_params(params))
            st.versions["v1"] = result["version"]
            assert result["mlflow_run_id"] == result["run_id"]
            # a human re-runs the gate with a lower floor
            out = run_cli([sys.executable, "-m", "babelrs_core.cli", "registry", "promote",
                           "--version", st.versions["v1"], "--set", "registry.floor=0"],
                          st.env())  # fmt: skip
            st.promote_v1 = _last_json(out.stdout)
            _register(st, trained.better, "v2")
            _register(st, trained.worse, "v3")
            yield st
    finally:
        server.stop()
        s3.stop()


def test_gate_promotes_only_a_better_challenger_and_tags_why(state: State) -> None:
    t = state.trained
    margin = 1.0  # params.yaml registry.margin, used by the registrations above
    assert t.better.hmap - t.worse.hmap >= margin, "the fixtures must differ by the margin"
    client = state.client()
    v1 = client.get_model_version(NAME, state.versions["v1"])
    # first try: below the floor; the CLI re-run with floor 0 promoted it
    assert state.promote_v1["gate.decision"] == "promoted"
    assert "first version" in state.promote_v1["gate.reason"]
    run = client.get_run(v1.run_id)
    assert run.data.tags["babelrs.stage"] == "register"
    assert run.data.tags["gate.decision"] == "promoted"  # the decision is in the run too
    reg1 = json.loads((state.tmp / "v1" / "registration.json").read_text())
    assert reg1["promoted"] is False and "floor 100.00" in reg1["gate"]["gate.reason"]

    v2, v3 = state.tags("v2"), state.tags("v3")
    assert v2["gate.decision"] == "promoted" and v2["gate.champion_version"] == "1"
    assert float(v2["gate.gain"]) == pytest.approx(t.better.hmap - t.worse.hmap, abs=1e-3)
    assert v3["gate.decision"] == "rejected" and "below margin" in v3["gate.reason"]
    assert v3["gate.champion_version"] == state.versions["v2"]
    assert float(v3["gate.challenger_hmap"]) == pytest.approx(t.worse.hmap, abs=1e-3)
    # the same evaluation data for all: no re-evaluation was needed
    assert v2["eval.data_hash"] == v3["eval.data_hash"] == v1.tags["eval.data_hash"]
    assert "gate.champion_reevaluated" not in v3
    champ = client.get_model_version_by_alias(NAME, "champion")
    chall = client.get_model_version_by_alias(NAME, "challenger")
    assert champ.version == state.versions["v2"] and chall.version == state.versions["v3"]
    # every version's description is its model card, with the gate's last verdict
    v1_card = client.get_model_version(NAME, state.versions["v1"]).description
    assert "Gate: **promoted**: first version" in v1_card  # rewritten by the CLI's re-run
    v3_card = client.get_model_version(NAME, state.versions["v3"]).description
    assert "Gate: **rejected**" in v3_card and "below margin" in v3_card
    assert f"| overall | {float(v3['eval.overall.ap50']):.2f} |" in v3_card


CONSUMER = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.DataFrame({"image": [open(p, "rb").read() for p in sys.argv[3:]],
                      "modality": [sys.argv[2]] * (len(sys.argv) - 3)})
out = model.predict(frame)
import babelrs_core
print("RESULT " + json.dumps({"module": babelrs_core.__file__, "rows": out.to_dict("records")}))
"""


def _new_image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((64, 64), 90, np.uint8) + rng.integers(0, 25, (64, 64), dtype=np.uint8)
    _draw(img, 0, 6, 8, 22, 24)
    _draw(img, 1, 36, 30, 54, 48)
    Image.fromarray(img).save(path)
    return path


def _in_process(state: State, path: Path) -> pd.DataFrame:
    from babelrs_core.detector.inference import Detector

    det = Detector.from_checkpoint(state.trained.better.finetune)
    return det.predict_frame(np.asarray(Image.open(path)), "sar")


def test_a_process_knowing_only_the_uri_loads_the_champion_and_predicts(
    state: State, tmp_path: Path
) -> None:
    image = _new_image(tmp_path / "scene.png", seed=123)
    env = clean_env(MLFLOW_TRACKING_URI=state.url)  # no PYTHONPATH: code comes with the model
    cmd = [sys.executable, "-c", CONSUMER, CHAMPION_URI, "sar", str(image)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line.removeprefix("RESULT "))
    assert "/code/babelrs_core/" in got["module"]  # the package logged with the model
    rows = pd.DataFrame(got["rows"])
    expected = _in_process(state, image)  # the champion is the better checkpoint
    assert len(expected) > 0 and len(rows) == len(expected)
    assert np.allclose(rows[COLS].to_numpy(), expected[COLS].to_numpy(), atol=1e-4)
    assert rows["class_name"].tolist() == expected["class_name"].tolist()
    assert set(rows["image_index"]) == {0}


def test_babelrs_predict_writes_csv_json_and_overlays(state: State, tmp_path: Path) -> None:
    images = [_new_image(tmp_path / f"img{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "babelrs_core.cli", "predict", "--model", CHAMPION_URI,
            "--modality", "sar", "--out", str(out), "--overlays", *map(str, images)]  # fmt: skip
    summary = _last_json(run_cli(args, state.env(), cwd=tmp_path, timeout=600).stdout)
    table = pd.read_csv(out / "detections.csv")
    fc = json.loads((out / "detections.json").read_text())
    expected = [_in_process(state, p) for p in images]
    assert summary["detections"] == len(table) == len(fc["features"]) == sum(map(len, expected))
    assert np.allclose(table[table["image_index"] == 1][COLS], expected[1][COLS], atol=1e-4)
    feat = fc["features"][0]
    ring = feat["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and feat["properties"]["modality"] == "sar"
    assert ring[0] == pytest.approx([table["x1"][0], table["y1"][0]], abs=1e-4)
    for img in images:
        with Image.open(out / f"{img.stem}.overlay.png") as im:
            assert im.size == (64, 64)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    res = subprocess.run([*args[:-2], str(bad)], cwd=tmp_path, env=state.env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 2 and f"{bad}: cannot decode image" in res.stderr


def test_mlflow_models_serve_answers_like_the_in_process_model(
    state: State, tmp_path: Path
) -> None:
    import mlflow

    from babelrs_core.registry.payload import input_frame, json_payload

    port = free_port()
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", CHAMPION_URI,
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    server: Server = _spawn("mlflow models serve", cmd, clean_env(MLFLOW_TRACKING_URI=state.url),
                            tmp_path / "serve.log", tmp_path)  # fmt: skip
    server.url = f"http://127.0.0.1:{port}"
    server.health = server.url + "/ping"
    try:
        server.wait(300)
        image = _new_image(tmp_path / "rest.png", seed=7)
        frame = input_frame([image.read_bytes()], "sar", ["rest.png"])
        body = json.dumps(json_payload(frame)).encode()
        req = urllib.request.Request(server.url + "/invocations", body,
                                     {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=120) as resp:
            got = pd.DataFrame(json.loads(resp.read())["predictions"])
    finally:
        server.stop()
    mlflow.set_tracking_uri(state.url)
    expected = mlflow.pyfunc.load_model(CHAMPION_URI).predict(frame)
    assert len(expected) > 0 and len(got) == len(expected)
    assert np.allclose(got[COLS].to_numpy(), expected[COLS].to_numpy(), atol=1e-4)
    assert got["image_id"].tolist() == ["rest.png"] * len(got)
    assert got["class_name"].tolist() == expected["class_name"].tolist()


def test_two_racing_promotions_leave_one_consistent_champion(state: State) -> None:
    # a second copy of the better detector, then the champion is rolled back to the worse v1:
    # v2 and v4 both beat it, and they race
    _register(state, state.trained.better, "v4")
    client = state.client()
    client.set_registered_model_alias(NAME, "champion", state.versions["v1"])
    env = state.env(BABELRS_GATE_PAUSE_S="8")  # hold the lock long enough to overlap
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "babelrs_core.cli",
                "registry",
                "promote",
                "--version",
                state.versions[v],
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in ("v2", "v4")
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    decisions = {v: _last_json(o[0]) for v, o in zip(("v2", "v4"), outs, strict=True)}
    winners = [v for v, d in decisions.items() if d["gate.decision"] == "promoted"]
    assert len(winners) == 1, decisions
    (winner,) = winners
    loser = "v4" if winner == "v2" else "v2"
    # the loser was compared with the winner, not with the old champion v1
    assert decisions[winner]["gate.champion_version"] == state.versions["v1"]
    assert decisions[loser]["gate.champion_version"] == state.versions[winner]
    assert "below margin" in decisions[loser]["gate.reason"]
    champ = client.get_model_version_by_alias(NAME, "champion")
    assert champ.version == state.versions[winner]
    assert state.tags(loser)["gate.decision"] == "rejected"
    # the two gates overlapped: the loser waited for the winner's lock (held >= 8 s)
    assert float(state.tags(loser)["gate.lock_wait_s"]) > 0.5, state.tags(loser)
    assert float(state.tags(winner)["gate.lock_wait_s"]) < 8.0
    # the challenger alias stays on the newest registered version
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert str(challenger.version) == state.versions["v4"]
    # promotion deletes nothing; the lock is gone
    versions = client.search_model_versions(f"name='{NAME}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert [m.name for m in client.search_registered_models()] == [NAME]
