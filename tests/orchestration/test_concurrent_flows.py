"""Two ``babelrs-retrain`` flows at once (the weekly schedule and a manual run) on one real Prefect
server and one real MLflow server, writing the same output folders with different params: both
complete, and the stage locks (babelrs_core/io/output_lock.py) make them take turns, so no two runs
of a stage were ever writing at the same time. A third process holds the raw-data lock until both
flows have started, so that the flows overlap for sure."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest

from babelrs_core.data.manifest import read_manifest
from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import ROOT, prefect_env, run_flow
from tests.orchestration.test_flow_server import STAGES, tiny_overrides

pytestmark = pytest.mark.slow

EXPERIMENT = "concurrent-flows"
HOLD = """
import sys, time
from pathlib import Path
from babelrs_core.io.output_lock import output_locks
with output_locks([Path(sys.argv[1])], 5, who="the test"):
    print("held", flush=True)
    time.sleep(600)
"""


def _wait_for_parent_runs(client: mlflow.MlflowClient, n: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            parents = "attributes.run_name = 'babelrs-retrain'"
            runs = client.search_runs([exp.experiment_id], parents)
            if len(runs) >= n:
                return
        time.sleep(0.5)
    raise AssertionError(f"{n} flows did not start within {deadline_s} s")


def test_two_flows_on_the_same_outputs_take_turns(servers: Servers, tmp_path: Path) -> None:
    env = prefect_env(tmp_path / "prefect-home", servers.prefect.url,
                      MLFLOW_TRACKING_URI=servers.mlflow.url)  # fmt: skip
    base = tiny_overrides(tmp_path, EXPERIMENT)
    # another SAR training count: other generate / import cache keys, so both flows run both stages
    other = {**base, "soi_mini.sardet.splits": {"train": 3, "test": 1}}
    client = mlflow.MlflowClient(servers.mlflow.url)
    # a third party holds the raw-data lock until both flows are under way, so that they overlap
    # for sure (tiny flows take ~2 s; process start-up alone can tell them apart)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, base["paths.raw"]], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_flow, {"overrides": ov, "stages": STAGES, "track": True}, env)
                   for ov in (base, other)]  # fmt: skip
        try:
            _wait_for_parent_runs(client, 2, deadline_s=300)
        finally:
            holder.kill()
            holder.wait(timeout=30)
        results = [f.result() for f in futures]
    assert [r["state"] for r in results] == ["COMPLETED", "COMPLETED"], results

    parents = [client.get_run(r["result"]["mlflow_parent_run_id"]) for r in results]
    (a0, a1), (b0, b1) = [(p.info.start_time, p.info.end_time) for p in parents]
    assert a0 < b1 and b0 < a1, "the two flows did not run at the same time"
    exp = client.get_experiment_by_name(EXPERIMENT)
    for name in STAGES:
        runs = client.search_runs([exp.experiment_id], f"tags.`babelrs.stage` = '{name}'")
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {p.info.run_id for p in parents}
        spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
        assert spans[0][1] <= spans[1][0], f"two {name} stages wrote at the same time: {spans}"
    # what is left is one whole manifest, written by one of the two runs
    frame = read_manifest(Path(base["paths.manifest"]))
    sar_train = frame[(frame["dataset"] == "sardet") & (frame["split"] == "train")]
    assert sar_train["image_id"].nunique() in (2, 3)
