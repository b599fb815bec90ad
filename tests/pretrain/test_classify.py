"""The no-language control (``pretrain.objective: classification``): the region classifier
trains on the fake data, resumes exactly, and its output loads as the detector's backbone like a
CSIA encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelrs_core.pretrain.train import fingerprint, run_pretraining
from babelrs_core.settings_env import offline_by_default
from tests.pretrain.fakes import make_fake_dataset
from tests.pretrain.test_train import tiny_params

offline_by_default()
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_fake_dataset(tmp_path_factory.mktemp("fake"))


def _params(fake: Path, **extra):
    return tiny_params(fake.parent / "raw", objective="classification", **extra)


def test_classification_lowers_the_loss_and_writes_a_csia_shaped_encoder(
    fake: Path, tmp_path: Path
) -> None:
    params = _params(fake)
    seen: list[int] = []
    m = run_pretraining(params, fake, tmp_path, callbacks=[lambda s, d: seen.append(s)])
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31)) == seen
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert {"loss", "accuracy", "grad_norm", "alpha", "lr", "nonfinite_steps"} <= set(log[-1])
    # the same outputs the detector and the ablation read from a CSIA run
    info = json.loads((tmp_path / "encoder.json").read_text())
    assert info["objective"] == "classification" and info["language_model"] is None
    assert info["lvsa"]["layers"] and info["normalization"].keys() == {"sar", "rgb", "ir"}
    assert (tmp_path / "classifier.safetensors").exists()
    assert not (tmp_path / "projector.safetensors").exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["objective"] == "classification" and m["steps"] == 30
    assert saved["timing"]["train_cpu_s"] > 0 and saved["timing"]["steps_this_run"] == 30
    for mod, score in saved["region_accuracy"].items():
        assert 0 <= score <= 1 and saved["region_chance"][mod] == 0.5
        region = saved["heldout"][mod]["region"]  # beside it, always answering the commonest class
        assert 1 / 2 <= region["majority"] <= 1 and region["n"] > 0

    # its encoder is the detector's backbone, loaded strictly as a CSIA encoder is
    from babelrs_core.detector.backbone import BabelRSBackbone

    backbone = BabelRSBackbone(init="csia", pretrained_dir=str(tmp_path), layers=[5, 11, 16])
    weights = load_file(str(tmp_path / "encoder.safetensors"))
    for k, v in backbone.encoder.state_dict().items():
        assert torch.equal(v, weights[k]), k
    feats = backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [8, 4, 2]


def test_classification_resumes_to_the_same_weights_and_has_its_own_fingerprint(
    fake: Path, tmp_path: Path
) -> None:
    params = _params(fake, steps=12, checkpoint_every=4)
    run_pretraining(params, fake, tmp_path / "a")
    assert run_pretraining(params, fake, tmp_path / "b", stop_after=6)["stopped_at"] == 6
    run_pretraining(params, fake, tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "b" / "encoder.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    language = tiny_params(fake.parent / "raw", steps=12, checkpoint_every=4)
    assert fingerprint(params) != fingerprint(language)
    assert fingerprint(params)["pretrain.objective"] == "classification"
