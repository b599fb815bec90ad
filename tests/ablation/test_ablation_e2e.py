"""A tiny whole ablation on fake data: a real (tiny) CSIA pretraining, two variants x fp32 x two
seeds plus fp16 CPU probes, in two worker processes, tracked in a local MLflow store; then a rerun
that reuses every finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babelrs_core.ablation.run import PARENT_NAME, run_ablation
from babelrs_core.config import load_params
from babelrs_core.settings_env import offline_by_default
from tests.detector.det_fakes import TINY
from tests.images import assert_png
from tests.pretrain.fakes import make_fake_dataset

offline_by_default()
ROOT = Path(__file__).resolve().parents[2]

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


def _params(tmp: Path, manifest: Path):
    finetune = {k: v for k, v in TINY.items() if not k.startswith("evaluation.")}
    overrides = {
        **finetune,
        "pretrain": PRETRAIN,
        "paths.raw": str(manifest.parent / "raw"),
        "paths.manifest": str(manifest),
        "tracking.store": str(tmp / "mlflow"),
        "evaluation.samples_per_modality": 1,
        "ablation": {
            "variants": {
                "ours": {"label": "CSIA + LVSA (ours)", "init": "csia"},
                "imagenet": {"label": "ImageNet", "init": "imagenet"},
            },
            "expected_order": ["ours", "imagenet"],
            "precisions": ["fp32", "fp16"],
            "seeds": [0, 1],
            "iters": 4,
            "probe_iters": 2,
            "pretrain_eval_max_per_task": 1,
            "grad_cosine_every": 2,
            "workers": 2,
            "threads": 1,
            "out_root": str(tmp / "ablation"),
            "results_md": str(tmp / "docs" / "results.md"),
            "plots_dir": str(tmp / "docs" / "img" / "ablation"),
        },
    }
    return load_params(ROOT / "params.yaml", overrides)


@pytest.mark.slow
def test_tiny_ablation_tracks_parent_and_children_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    manifest = make_fake_dataset(tmp_path / "fake", {"train": 6, "val": 3, "test": 3})
    params = _params(tmp_path, manifest)
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir(parents=True)
    results.write_text("# Results\n\n## Detector fine-tuning\n\nkept as is\n")

    summary = run_ablation(params, device="cpu", log=lambda _: None)

    # the report: both variants with two seeds, the statement, the probes, the PNGs
    assert summary["run"]["ran"] == 1 + 2 * 2 + 2 and summary["run"]["reused"] == 0
    groups = {(g["variant"], g["precision"], g["mode"]): g for g in summary["groups"]}
    assert set(groups) == {
        ("ours", "fp32", "full"), ("imagenet", "fp32", "full"),
        ("ours", "fp16", "probe"), ("imagenet", "fp16", "probe"),
    }  # fmt: skip
    for key in (("ours", "fp32", "full"), ("imagenet", "fp32", "full")):
        assert groups[key]["seeds"] == [0, 1]
        assert set(groups[key]["mean"]) >= {"overall.hmap", "sardet.ap50", "dota.map"}
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
    assert ("ordering held here" in section) != ("ordering did not hold here" in section)
    assert "| ImageNet (`imagenet`) | fp16 | 2 |" in section  # the probe table
    plots = tmp_path / "docs" / "img" / "ablation"
    for name in ("grad_norm_fp32.png", "grad_cosine_fp32.png", "grad_norm_fp16_probe.png"):
        assert_png(plots / name, min_size=(200, 150), min_colours=10)
        assert f"](img/ablation/{name})" in section
    saved = json.loads((tmp_path / "ablation" / "summary.json").read_text())
    assert saved["statements"] == summary["statements"]

    # MLflow: one parent, a child per pretraining and fine-tuning run, tagged and with metrics
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    [parent] = [r for r in runs if r.info.run_name == PARENT_NAME]
    assert parent.info.run_id == summary["run"]["mlflow_parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["ablation.iters"] == "4"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    names = sorted(r.info.run_name for r in children)
    full = [f"{v}/fp32/seed{s}" for v in ("ours", "imagenet") for s in (0, 1)]
    assert names == sorted(
        ["pretrain/ours"]
        + [f"finetune/{key}" for key in full]
        + [f"finetune/{v}/fp16/seed0" for v in ("ours", "imagenet")]
        + [f"evaluate/{key}" for key in full]
    )
    for child in children:
        assert child.info.status == "FINISHED"
        tags = child.data.tags
        assert tags["babelrs.runner"] == "ablation"  # through the one stage runner
        assert tags["babelrs.stage"] == child.info.run_name.split("/")[0]
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

    # a rerun trains nothing (every run reused by fingerprint) and gets a second parent run
    again = run_ablation(params, device="cpu", log=lambda _: None)
    assert again["run"]["ran"] == 0 and again["run"]["reused"] == 7
    assert again["groups"] == summary["groups"]
    parents = client.search_runs(
        [exp.experiment_id], filter_string=f"attributes.run_name = '{PARENT_NAME}'"
    )
    assert len(parents) == 2
