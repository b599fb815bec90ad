"""Tiny-config training: the loss falls and the outputs are written; an interrupted and resumed
run ends with exactly the weights of an uninterrupted one (CPU, fixed seed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelrs_core.config import Params
from babelrs_core.models import load_pretrained_encoder
from babelrs_core.pretrain import checkpoint as ckpt
from babelrs_core.pretrain.results_section import SECTION, update_results_doc
from babelrs_core.pretrain.train import run_pretraining
from babelrs_core.settings_env import offline_by_default
from tests.pretrain.fakes import make_fake_dataset

offline_by_default()
torch.set_num_threads(1)


def tiny_params(raw: Path, **pretrain) -> Params:
    cfg = {
        "language_model": "tiny",
        "image_size": 32,
        "steps": 30,
        "batch_size": 4,
        "lr": 1e-2,
        "lr_scale_lm": 1.0,
        "warmup_steps": 3,
        "checkpoint_every": 10,
        "holdout_fraction": 0.2,
        "eval_max_per_task": 4,
        "max_new_tokens": 4,
        "max_answer_tokens": 10,
        "freeze": {"lm_embeddings": False, "lm_layers": 0},
        "lvsa": {"tau": 9, "grid": 2},
        "pixel_shuffle": 1,
        "tiny_lm": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
        **pretrain,
    }
    return Params.model_validate({"seed": 3, "paths": {"raw": str(raw)}, "pretrain": cfg})


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_fake_dataset(tmp_path_factory.mktemp("fake"))


def test_tiny_run_lowers_the_loss_and_writes_outputs(fake: Path, tmp_path: Path) -> None:
    params = tiny_params(fake.parent / "raw")
    seen: list[tuple[int, dict]] = []
    m = run_pretraining(params, fake, tmp_path, callbacks=[lambda s, d: seen.append((s, d))])
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31)) == [s for s, _ in seen]
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    for row in log:
        assert {"loss", "grad_norm", "alpha", "lr", "nonfinite_steps"} <= set(row)
    for mod in ("sar", "rgb", "ir"):  # per-modality loss whenever the batch holds that modality
        assert any(f"loss_{mod}" in row for row in log)
    # MLflow-ready: finite numbers, and exactly what the JSON log holds for that step
    assert all(isinstance(v, float | int) and math.isfinite(v) for _, d in seen for v in d.values())
    assert [d["loss"] for _, d in seen] == [r["loss"] for r in log]
    assert log[0]["lr"] < log[3]["lr"]  # warmup
    assert log[0]["alpha"] == 0.0 and log[-1]["alpha"] == 1.0 and log[-1]["nonfinite_steps"] == 0
    # outputs: encoder weights + description, metrics per modality and task
    enc, info = load_pretrained_encoder(tmp_path)
    assert enc.num_layers == 16
    assert info["encoder"] == "efficientnet_lite0" and [t["layer"] for t in info["taps"]] == [
        5,
        11,
        16,
    ]
    assert [t["stride"] for t in info["taps"]] == [8, 16, 32]
    assert set(info["normalization"]) == {"sar", "rgb", "ir"}
    sar = info["normalization"]["sar"]
    assert sar["mean"][0] == sar["mean"][1] == sar["mean"][2]  # grey files, replicated
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(m))
    # every score is the mean of the per-prompt scores written beside it, over 1..4 prompts
    records = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    for mod in ("sar", "rgb", "ir"):
        assert {"region", "count", "presence", "listing"} <= set(metrics["heldout"][mod])
        assert metrics["heldout"][mod]["region"]["chance"] == 0.5
    assert "caption" in metrics["heldout"]["sar"]
    for mod, tasks in metrics["heldout"].items():
        for task, score in tasks.items():
            got = [r["score"] for r in records if r["modality"] == mod and r["task"] == task]
            value = score["word_f1" if task == "caption" else "accuracy"]
            assert 1 <= score["n"] == len(got) <= 4, (mod, task, score["n"], len(got))
            assert 0.0 <= value <= 1.0 and value == pytest.approx(sum(got) / len(got)), (mod, task)
    assert metrics["final_loss"] == log[-1]["loss"]
    # the docs section is generated from the metrics JSON
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## Other\n\nkeep me\n")
    update_results_doc(tmp_path / "metrics.json", doc)
    update_results_doc(tmp_path / "metrics.json", doc)
    text = doc.read_text()
    assert text.count(SECTION) == 1 and "keep me" in text and "| SAR |" in text


def test_resume_gives_the_weights_of_an_uninterrupted_run(fake: Path, tmp_path: Path) -> None:
    params = tiny_params(fake.parent / "raw", steps=12, checkpoint_every=5, eval_max_per_task=1)
    full, part = tmp_path / "full", tmp_path / "part"
    run_pretraining(params, fake, full)
    stopped = run_pretraining(params, fake, part, stop_after=7)
    assert (
        stopped["stopped_at"] == 7
        and ckpt.latest_checkpoint(part / "checkpoints").name == "step_0000007.pt"
    )
    assert not (part / "encoder.safetensors").exists()
    run_pretraining(params, fake, part)  # resumes at step 7
    a, b = load_file(full / "encoder.safetensors"), load_file(part / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa, pb = load_file(full / "projector.safetensors"), load_file(part / "projector.safetensors")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    ma = ckpt.load_checkpoint(ckpt.latest_checkpoint(full / "checkpoints"))["model"]
    mb = ckpt.load_checkpoint(ckpt.latest_checkpoint(part / "checkpoints"))["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)  # language model included
    la = (full / "metrics.jsonl").read_text().splitlines()
    lb = (part / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in la] == [json.loads(x)["loss"] for x in lb]


def test_resume_refuses_changed_params_and_corrupted_checkpoints(
    fake: Path, tmp_path: Path
) -> None:
    params = tiny_params(fake.parent / "raw", steps=4, checkpoint_every=2)
    run_pretraining(params, fake, tmp_path, stop_after=2)
    changed = tiny_params(fake.parent / "raw", steps=4, checkpoint_every=2, lr=2e-2)
    with pytest.raises(ckpt.CheckpointError, match=r"pretrain\.lr"):
        run_pretraining(changed, fake, tmp_path)
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match=str(path.name)):
        run_pretraining(params, fake, tmp_path)
    m = run_pretraining(params, fake, tmp_path, resume=False)  # starting over is explicit
    assert m["steps"] == 4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run(fake: Path, tmp_path: Path, precision: str) -> None:
    params = tiny_params(fake.parent / "raw", steps=2, precision=precision, eval_max_per_task=1)
    m = run_pretraining(params, fake, tmp_path)
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and m["steps"] == 2
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log), log
    assert m["final_loss"] == log[-1]["loss"]
    # a step whose gradients overflow is skipped and counted; the weights written stay finite
    assert log[-1]["nonfinite_steps"] < 2  # at least one of the two steps was applied
    enc = load_file(tmp_path / "encoder.safetensors")
    assert enc and all(torch.isfinite(t).all() for t in enc.values())
