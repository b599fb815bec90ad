"""A tiny whole ablation through ``babelrs ablation run`` = the ``babelrs-ablation`` Prefect flow
(reached through its entry point) on an ephemeral Prefect API, as ``make ablation`` runs it,
tracked in a local MLflow store; a real ``prefect server`` on the same database reads the runs
back afterwards.

The plan: a real (tiny) CSIA pretraining, two variants x fp32 x two seeds plus fp16 CPU probes,
and a variant whose pretraining fails at once (its language model does not exist), in two worker
processes. The first run fails at the end, after every other run completed and the report was
written; the Prefect API shows the flow run and a ``gpu``-tagged task run per job, the fine-tunings
of ``ours`` after (and waiting for) its pretraining. Then the plan without the broken variant
reuses every finished run by fingerprint: no task runs, the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from babelrs_core.ablation.report import RUN_JSON
from babelrs_core.ablation.run import PARENT_NAME
from babelrs_core.config import load_params
from babelrs_core.tracking import ERROR_TAG
from tests.detector.det_fakes import TINY
from tests.images import assert_png
from tests.orchestration.servers_prefect_mlflow import prefect_env, start_prefect_server
from tests.pretrain.fakes import make_fake_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FLOW = "babelrs-ablation"

PRETRAIN = {
    "language_model": "tiny",
    "image_size": 32,
    "steps": 4,
    "log_every": 1,  # every step's metrics reach the MLflow run
    "batch_size": 4,
    "warmup_steps": 1,
    "checkpoint_every": 2,
    "holdout_fraction": 0.2,
    "max_new_tokens": 2,
    "max_answer_tokens": 10,
    "freeze": {"lm_embeddings": False, "lm_layers": 0},
    "lvsa": {"tau": 2, "grid": 2},
    "pixel_shuffle": 1,
    "tiny_lm": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
}
VARIANTS = {
    "ours": {"label": "CSIA + LVSA (ours)", "init": "csia"},
    "imagenet": {"label": "ImageNet", "init": "imagenet"},
}


def _params_file(tmp: Path, manifest: Path, variants: dict[str, Any], name: str) -> Path:
    finetune = {k: v for k, v in TINY.items() if not k.startswith("evaluation.")}
    overrides = {
        **finetune,
        "pretrain": PRETRAIN,
        "paths.raw": str(manifest.parent / "raw"),
        "paths.manifest": str(manifest),
        "tracking.store": str(tmp / "mlflow"),
        "evaluation.samples_per_modality": 1,
        "ablation": {
            "variants": variants,
            "expected_order": ["ours", "imagenet"],
            "compute_controls": {},  # the controls' scheduling: tests/ablation/test_controls.py
            "label_variants": [],
            "precisions": ["fp32", "fp16"],
            "seeds": [0, 1],
            "eval_images": 0,  # the fake manifest above (its own SOI-mini: test_plan.py)
            "iters": 4,
            "probe_iters": 2,
            "pretrain_eval_max_per_task": 1,
            "grad_cosine_every": 2,
            "bootstrap_samples": 50,
            "workers": 2,
            "threads": 1,
            "out_root": str(tmp / "ablation"),
            "results_md": str(tmp / "docs" / "results.md"),
            "plots_dir": str(tmp / "docs" / "img" / "ablation"),
        },
    }
    path = tmp / name
    dumped = load_params(ROOT / "params.yaml", overrides).model_dump(mode="json")
    path.write_text(yaml.safe_dump(dumped, sort_keys=False))
    return path


def _ablation(params: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``babelrs ablation run --params <params>`` in a fresh process."""
    args = [sys.executable, "-m", "babelrs_core.cli", "ablation", "run", "--params", str(params)]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip


def _flow_runs(api_url: str) -> list[Any]:
    """The ``babelrs-ablation`` flow runs of the server, oldest first."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with SyncPrefectClient(api_url) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])),
            sort=FlowRunSort.START_TIME_ASC,
        )


def _task_runs(api_url: str, flow_run_id: UUID) -> dict[str, Any]:
    """Task run name -> task run of one flow run."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with SyncPrefectClient(api_url) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r for r in runs}


def test_tiny_ablation_runs_through_the_flow_tracks_reports_and_reuses(tmp_path: Path) -> None:
    import mlflow

    manifest = make_fake_dataset(tmp_path / "fake", {"train": 6, "val": 3, "test": 3})
    broken = {"label": "broken", "init": "csia",
              "pretrain": {"language_model": str(tmp_path / "no-such-model")}}  # fmt: skip
    first_params = _params_file(tmp_path, manifest, {**VARIANTS, "broken": broken}, "first.yaml")
    second_params = _params_file(tmp_path, manifest, VARIANTS, "second.yaml")
    params = load_params(second_params)
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir(parents=True)
    results.write_text("# Results\n\n## Detector fine-tuning\n\nkept as is\n")
    # no PREFECT_API_URL: each command starts an ephemeral API on this database, as make ablation
    state = tmp_path / "prefect"
    env = prefect_env(
        state / "home",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{state / 'prefect.db'}",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )

    # -- first run: the broken pretraining fails, every other run completes, the command fails
    first = _ablation(first_params, env, tmp_path)
    log = f"{first.stdout[-3000:]}\n{first.stderr[-6000:]}"
    assert first.returncode == 1, log
    assert "error: 4 ablation run(s) failed: broken: FileNotFoundError" in first.stderr, log
    for key in ("broken/fp32/seed0", "broken/fp32/seed1", "broken/fp16/seed0"):
        assert f"{key}: its pretraining broken failed" in first.stderr
    output = first.stdout + first.stderr
    # the worker processes reported to the command's API, they started none of their own
    assert output.count("Starting temporary server") == 1, log
    # scheduled as before: the pretrainings and imagenet's fine-tunings first, ours' after its
    # pretraining
    order = [output.index(f"ablation: {line}") for line in (
        "pretrain ours", "pretrain broken", "fine-tune imagenet/fp32/seed0",
        "fine-tune imagenet/fp16/seed0", "ours done", "fine-tune ours/fp32/seed0")]  # fmt: skip
    assert order == sorted(order), log

    # the report: both variants with two seeds, the statement, the probes, the PNGs, the failures
    summary = json.loads((tmp_path / "ablation" / "summary.json").read_text())
    run_info = json.loads((tmp_path / "ablation" / RUN_JSON).read_text())
    assert summary["run"] == run_info
    assert run_info["ran"] == 1 + 2 * 2 + 2 and run_info["reused"] == 0
    assert run_info["workers"] == 2
    groups = {(g["variant"], g["precision"], g["mode"]): g for g in summary["groups"]}
    assert set(groups) == {
        ("ours", "fp32", "full"), ("imagenet", "fp32", "full"), ("broken", "fp32", "full"),
        ("ours", "fp16", "probe"), ("imagenet", "fp16", "probe"), ("broken", "fp16", "probe"),
    }  # fmt: skip
    for key in (("ours", "fp32", "full"), ("imagenet", "fp32", "full")):
        assert groups[key]["seeds"] == [0, 1]
        assert set(groups[key]["mean"]) >= {"overall.hmap", "sardet.ap50", "dota.map"}
    assert groups[("broken", "fp32", "full")]["failed"] == [0, 1]
    probe = groups[("ours", "fp16", "probe")]
    assert probe["seeds"] == [0] and probe["cpu_s_per_iter"] > 0 and probe["mean"] == {}
    [order] = summary["orderings"]
    assert order["precision"] == "fp32" and set(order["measured"]) == {"ours", "imagenet"}
    text = results.read_text()
    assert "## Detector fine-tuning\n\nkept as is" in text
    section = text[text.index("## Ablation") :]
    assert "CSIA + LVSA (ours) (`ours`) | fp32 | 0, 1 |" in section
    assert "ImageNet (`imagenet`) | fp32 | 0, 1 |" in section
    assert summary["statements"][0] in section
    # the claims: paired bootstrap intervals over the evaluation images, one sentence per claim
    assert "**Claims, fp32**" in section and "* ours > imagenet: *" in section
    [claims] = summary["claims"]
    assert claims["comparisons"][0]["seeds"] == [0, 1] and not claims["mismatched"]
    assert "| ImageNet (`imagenet`) | fp16 | 2 |" in section  # the probe table
    assert "broken/fp32/seed0: failed (its pretraining broken failed)" in section
    plots = tmp_path / "docs" / "img" / "ablation"
    for name in ("grad_norm_fp32.png", "grad_cosine_fp32.png", "grad_norm_fp16_probe.png"):
        assert_png(plots / name, min_size=(200, 150), min_colours=10)
        assert f"](img/ablation/{name})" in section

    # MLflow: one parent (FAILED: a run failed), a child per pretraining and fine-tuning run
    full = [f"{v}/fp32/seed{s}" for v in ("ours", "imagenet") for s in (0, 1)]
    finetunes = [f"finetune/{k}" for k in (*full, "ours/fp16/seed0", "imagenet/fp16/seed0")]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    [parent] = [r for r in runs if r.info.run_name == PARENT_NAME]
    assert parent.info.run_id == summary["run"]["mlflow_parent_run_id"]
    assert parent.info.status == "FAILED"
    assert parent.data.params["ablation.iters"] == "4"
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # an attempt that failed with a transient error and was retried (the flow's retry policy) is a
    # FAILED run with its error; said in the warnings summary, and counted in the task's run_count
    retried = [
        r for r in children if r.info.status == "FAILED" and r.info.run_name != "pretrain/broken"
    ]
    for attempt in retried:
        assert attempt.data.tags.get(ERROR_TAG), attempt.info.run_name
        warnings.warn(
            f"retried {attempt.info.run_name}: {attempt.data.tags[ERROR_TAG]}", stacklevel=1
        )
    retried_ids = {r.info.run_id for r in retried}
    children = [r for r in children if r.info.run_id not in retried_ids]
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(
        ["pretrain/ours", "pretrain/broken"] + finetunes + [f"evaluate/{key}" for key in full]
    )
    for child in children:
        tags = child.data.tags
        assert tags["babelrs.runner"] == "ablation"  # through the one stage runner
        assert tags["babelrs.stage"] == child.info.run_name.split("/")[0]
        assert tags["prefect.flow_run_id"] == flow_run_id  # run by a task of the flow run
        if child.info.run_name == "pretrain/broken":
            assert child.info.status == "FAILED"
            continue
        assert child.info.status == "FINISHED"
        if child.info.run_name.startswith(("finetune/", "evaluate/")):
            variant, precision, seed = child.info.run_name.split("/")[1:]
            assert (tags["babelrs.variant"], tags["babelrs.precision"]) == (variant, precision)
            assert f"seed{tags['babelrs.seed']}" == seed
        if child.info.run_name.startswith("finetune/"):
            norms = client.get_metric_history(child.info.run_id, "grad_norm")
            if precision == "fp32":
                assert len(norms) == 4
            else:  # an fp16 step whose gradients overflow is skipped by the loss scaler
                skipped = child.data.metrics["summary.nonfinite_steps"]
                assert len(norms) + skipped == 2, (len(norms), child.data.metrics)
            assert child.data.params["finetune.iters"] == ("4" if precision == "fp32" else "2")
        elif child.info.run_name.startswith("evaluate/"):
            assert 0 <= child.data.metrics["summary.overall.hmap"] <= 100
        else:
            assert child.data.params["pretrain.lvsa.mode"] == "lvsa"
            history = client.get_metric_history(child.info.run_id, "loss")
            assert sorted(m.step for m in history) == [1, 2, 3, 4]

    # -- second run, without the broken variant: every run reused by fingerprint, no task runs
    second = _ablation(second_params, env, tmp_path)
    assert second.returncode == 0, f"{second.stdout[-3000:]}\n{second.stderr[-6000:]}"
    assert summary["statements"][0] in second.stdout
    again = json.loads((tmp_path / "ablation" / "summary.json").read_text())
    assert again["run"]["ran"] == 0 and again["run"]["reused"] == 7
    assert again["groups"] == [g for g in summary["groups"] if g["variant"] != "broken"]
    assert "broken" not in results.read_text().split("## Ablation", 1)[1]
    parents = client.search_runs(
        [exp.experiment_id], filter_string=f"attributes.run_name = '{PARENT_NAME}'"
    )
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]

    # -- the Prefect API (a server on the database the two commands used)
    server = start_prefect_server(state)
    try:
        flow_runs = _flow_runs(server.url)
        assert [r.state.name for r in flow_runs] == ["Failed", "Completed"]
        assert str(flow_runs[0].id) == flow_run_id
        assert _task_runs(server.url, flow_runs[1].id) == {}  # everything reused
        assert flow_runs[0].name.startswith("ablation-")
        # the first: one task run per job that ran, tagged gpu, with its state
        tasks = _task_runs(server.url, flow_runs[0].id)
        states = {name: t.state.name for name, t in tasks.items()}
        assert states == {
            "pretrain/ours": "Completed",
            "pretrain/broken": "Failed",  # FileNotFoundError: not retried
            **dict.fromkeys(finetunes, "Completed"),
        }
        # a fine-tuning task also evaluates: a retried evaluation is an attempt of that task
        attempts = Counter(r.info.run_name.replace("evaluate/", "finetune/", 1) for r in retried)
        for name, t in tasks.items():
            assert {"gpu", "babelrs"} <= set(t.tags), (t.name, t.tags)
            assert t.run_count == 1 + attempts[name], name
        # the fine-tunings of ours waited for its pretraining; imagenet's did not wait for anything
        pretrain = tasks["pretrain/ours"]
        for name in finetunes:
            waited = {str(i.id) for i in tasks[name].task_inputs.get("wait_for", [])}
            if "/ours/" in name:
                assert waited == {str(pretrain.id)}, name
                assert tasks[name].start_time >= pretrain.end_time, name
            else:
                assert waited == set(), name
    finally:
        server.stop()
