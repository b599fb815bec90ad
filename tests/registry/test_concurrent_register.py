"""Two ``babelrs stage register`` processes at once against one real ``mlflow server`` (SQLite,
artifacts in S3 on moto), each with its own tiny fine-tuned detector and evaluation.

Asserted: both versions exist with their ``eval.*`` and ``gate.*`` tags; exactly one is the
champion (registry.floor 0: the first gate promotes, the second compares against it); the alias
``challenger`` ends on the later-registered version; the two stage runs overlapped in time (their
MLflow runs' start / end) while their lock-holding parts did not (one waited for the other's lock,
held >= the gate pause)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params
from tests.orchestration.servers_prefect_mlflow import ROOT, clean_env, start_mlflow_server
from tests.servers import start_moto

pytestmark = pytest.mark.slow

NAME = "babelrs-detector-race"
PAUSE_S = 8.0  # each gate holds the promotion lock at least this long


def _detectors(root: Path) -> dict[str, Path]:
    """Two tiny fine-tunings (2 and 3 iterations) on the fake data, each evaluated; returns
    label -> params file of its register stage."""
    import torch

    from babelrs_core.detector.train import run_finetune
    from babelrs_core.evaluation.report import run_evaluation

    torch.set_num_threads(1)
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    out = {}
    for label, iters in (("a", 2), ("b", 3)):
        over = {
            "paths.finetune_out": str(root / f"finetune-{label}"),
            "paths.eval_out": str(root / f"eval-{label}"),
            "finetune.iters": iters,
            "registry.model_name": NAME,
            "registry.floor": 0.0,
            "registry.out_dir": str(root / f"registry-{label}"),
            "tracking.experiment": "register-race",
        }
        params = tiny_params(root, **over)
        run_finetune(params)
        run_evaluation(params)
        path = root / f"params-{label}.yaml"
        path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        out[label] = path
    return out


def test_two_register_stages_at_once(tmp_path: Path) -> None:
    import mlflow

    params = _detectors(tmp_path / "detectors")
    s3 = start_moto(log=tmp_path / "moto.log")
    server = start_mlflow_server(tmp_path, s3, "mlflow", wait=True)
    try:
        env = clean_env(MLFLOW_TRACKING_URI=server.url, PYTHONPATH=str(ROOT),
                        BABELRS_GATE_PAUSE_S=str(PAUSE_S), OMP_NUM_THREADS="1")  # fmt: skip
        procs = {
            label: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "babelrs_core.cli",
                    "stage",
                    "register",
                    "--params",
                    str(path),
                    "--quiet",
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for label, path in params.items()
        }
        outs = {label: p.communicate(timeout=600) for label, p in procs.items()}
        assert all(p.returncode == 0 for p in procs.values()), {k: o[1][-3000:] for k, o in
                                                                outs.items()}  # fmt: skip
        results = {
            label: json.loads((params[label].parent / f"registry-{label}" /
                               "registration.json").read_text())
            for label in params
        }  # fmt: skip

        client = mlflow.MlflowClient(server.url)
        versions = {label: r["version"] for label, r in results.items()}
        assert sorted(versions.values()) == ["1", "2"]
        tags = {label: client.get_model_version(NAME, v).tags for label, v in versions.items()}
        for label, t in tags.items():  # both versions with their evaluation and gate verdict
            assert t["eval.overall.hmap"] == f"{results[label]['hmap']:.4f}", t
            assert t["gate.decision"] in ("promoted", "rejected") and "gate.reason" in t, t

        # exactly one champion: the first gate promoted (floor 0), the second compared with it
        decisions = {label: t["gate.decision"] for label, t in tags.items()}
        assert sorted(decisions.values()) == ["promoted", "rejected"], decisions
        (winner,) = [k for k, d in decisions.items() if d == "promoted"]
        (loser,) = [k for k, d in decisions.items() if d == "rejected"]
        champion = client.get_model_version_by_alias(NAME, "champion")
        assert champion.version == versions[winner]
        assert tags[loser]["gate.champion_version"] == versions[winner], tags[loser]
        assert [r["promoted"] for r in (results[winner], results[loser])] == [True, False]

        # the challenger alias, moved under the lock, is on the later-registered version
        assert client.get_model_version_by_alias(NAME, "challenger").version == "2"

        # the two stages overlapped in time...
        runs = [client.get_run(r["run_id"]).info for r in results.values()]
        assert all(r.status == "FINISHED" for r in runs)
        assert max(r.start_time for r in runs) < min(r.end_time for r in runs), runs
        # ...and their lock-holding parts did not: one waited for the other's lock
        waits = {
            label: float(t["challenger.lock_wait_s"]) + float(t["gate.lock_wait_s"])
            for label, t in tags.items()
        }
        assert max(waits.values()) > 1.0, waits
        # no lock left behind, no version deleted
        assert [m.name for m in client.search_registered_models()] == [NAME]
        assert len(client.search_model_versions(f"name='{NAME}'")) == 2
    finally:
        server.stop()
        s3.stop()
