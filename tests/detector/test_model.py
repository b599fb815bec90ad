"""The multi-head detector, its backbone, heads, preprocessor and optimisation pieces."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from babelrs_core.detector.config import register_all

torch.set_num_threads(1)
register_all()

from mmdet.registry import DATASETS, MODELS  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402

from babelrs_core.detector.config import model_config, source_datasets  # noqa: E402
from babelrs_core.detector.optim import GuardedOptimWrapper, param_groups  # noqa: E402
from tests.detector.det_fakes import make_fake_manifest, tiny_params  # noqa: E402

NORM = {m: {"mean": [100.0] * 3, "std": [40.0] * 3} for m in ("sar", "rgb", "ir")}
#: A scratch-initialised model scores every box below the default 0.05: keep them all, so the
#: prediction tests see real outputs (with nothing predicted they would pass vacuously).
KEEP_ALL = {f"finetune.heads.{d}.score_thr": 0.0 for d in ("sardet", "dota", "dronevehicle")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detmodel")
    make_fake_manifest(root)
    return root


def _build(params):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(model_config(params, NORM)))
    model.init_weights()
    return model


def _batch(params, root: Path):
    dss = [DATASETS.build(c) for c in source_datasets(params, root / "manifest.parquet")]
    return pseudo_collate([dss[0][0], dss[0][1], dss[1][0], dss[2][0]])


def test_losses_are_per_head_weighted_and_summed(root: Path) -> None:
    params = tiny_params(root, **{"finetune.init": "scratch"})
    model = _build(params)
    data = model.data_preprocessor(_batch(params, root), True)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert {k.split(".")[0] for k in losses} == {"sardet", "dota", "dronevehicle"}
    total, log = model.parse_losses(losses)
    heads = sum(float(log[f"{d}.loss"]) for d in ("sardet", "dota", "dronevehicle"))
    assert float(total) == pytest.approx(heads, rel=1e-5)
    w0 = model.loss_weights["dota"]
    assert w0 == params.finetune.heads["dota"].loss_weight
    model.loss_weights["dota"] = 2.5 * w0
    doubled = model.parse_losses(model.loss(data["inputs"], data["data_samples"]))[1]
    assert float(doubled["dota.loss"]) == pytest.approx(2.5 * float(log["dota.loss"]), rel=1e-4)
    assert float(doubled["sardet.loss"]) == pytest.approx(float(log["sardet.loss"]), rel=1e-4)


def test_gradient_cosines_and_train_step(root: Path) -> None:
    params = tiny_params(root, **{"finetune.init": "scratch"})
    model = _build(params)
    data = model.data_preprocessor(_batch(params, root), True)
    losses = model.loss(data["inputs"], data["data_samples"])
    cos = model.gradient_cosines(losses)
    pairs = [k for k in cos if k.startswith("gradcos.encoder.")]
    assert sorted(pairs) == ["gradcos.encoder.dota~dronevehicle", "gradcos.encoder.dota~sardet",
                             "gradcos.encoder.dronevehicle~sardet"]  # fmt: skip
    assert all(-1.0 <= cos[k] <= 1.0 for k in pairs)
    assert cos["gradnorm.encoder.sardet"] > 0 and "gradcos.fpn.dota~sardet" in cos


def test_predict_routes_each_image_to_its_head(root: Path) -> None:
    params = tiny_params(root, **{"finetune.init": "scratch", **KEEP_ALL})
    model = _build(params).eval()
    batch = _batch(params, root)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        out = model.predict(data["inputs"], data["data_samples"])
    assert [o.metainfo["dataset"] for o in out] == ["sardet", "sardet", "dota", "dronevehicle"]
    # each head's own class count and box type: horizontal SAR (4 numbers), oriented RGB / IR (5)
    for o, n, dim in zip(out, [6, 6, 15, 5], [4, 4, 5, 5], strict=True):
        pred = o.pred_instances
        assert pred.labels.numel() > 0, o.metainfo["dataset"]
        assert int(pred.labels.min()) >= 0 and int(pred.labels.max()) < n
        assert pred.bboxes.shape == (pred.labels.numel(), dim), (
            o.metainfo["dataset"],
            pred.bboxes.shape,
        )
        assert bool(((pred.scores >= 0) & (pred.scores <= 1)).all())


def test_preprocessor_normalises_per_modality(root: Path) -> None:
    from mmdet.structures import DetDataSample

    pre = MODELS.build({"type": "ModalityDataPreprocessor", "pad_size_divisor": 32,
                        "norm": {"sar": {"mean": [10.0] * 3, "std": [2.0] * 3},
                                 "rgb": {"mean": [0.0] * 3, "std": [1.0] * 3}}})  # fmt: skip
    img = torch.full((3, 20, 30), 14, dtype=torch.uint8)
    samples = [
        DetDataSample(metainfo={"modality": m, "img_shape": (20, 30)}) for m in ("sar", "rgb")
    ]
    out = pre({"inputs": [img, img], "data_samples": samples}, False)
    x = out["inputs"]
    assert tuple(x.shape) == (2, 3, 32, 32)
    assert float(x[0, 0, 0, 0]) == 2.0 and float(x[1, 0, 0, 0]) == 14.0
    assert float(x[0, 0, 25, 31]) == 0.0  # padding
    bad = [DetDataSample(metainfo={"modality": "ir", "img_shape": (20, 30)})]
    with pytest.raises(ValueError, match="modality 'ir'"):
        pre({"inputs": [img], "data_samples": bad}, False)


@pytest.mark.parametrize("head", ["retinanet", "fcos", "atss"])
def test_other_head_types_build_and_train(root: Path, head: str) -> None:
    params = tiny_params(root, **{"finetune.init": "scratch", "finetune.heads.dota.type": head,
                                  "finetune.heads.dota.box_type": "hbox"})  # fmt: skip
    model = _build(params)
    assert type(model.heads["dota"]).__name__.lower().startswith(head[:4])
    data = model.data_preprocessor(_batch(params, root), True)
    total, log = model.parse_losses(model.loss(data["inputs"], data["data_samples"]))
    total.backward()
    assert math.isfinite(float(log["dota.loss"]))


def test_vit_backbone_gives_a_simple_feature_pyramid() -> None:
    bb = MODELS.build({"type": "BabelRSBackbone", "encoder": "vit_tiny", "init": "scratch",
                       "arch": {"depth": 2, "width": 32, "heads": 2}, "layers": [1, 2],
                       "vit_strides": [8, 16]})  # fmt: skip
    outs = bb(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 12), (1, 32, 4, 6)]
    assert bb.out_strides == [8, 16]
    with pytest.raises(ValueError, match="taps"):
        MODELS.build({"type": "BabelRSBackbone", "encoder": "vit_tiny", "init": "scratch",
                      "arch": {"depth": 3, "width": 32, "heads": 2}, "layers": [1, 2, 3],
                      "vit_strides": [8, 16]})  # fmt: skip


def test_init_switch_and_frozen_layers(tmp_path: Path) -> None:
    from tests.detector.det_fakes import make_fake_encoder

    enc_dir = make_fake_encoder(tmp_path / "enc", seed=5)
    a = MODELS.build({"type": "BabelRSBackbone", "init": "csia", "pretrained_dir": str(enc_dir),
                      "frozen_layers": 3})  # fmt: skip
    b = MODELS.build({"type": "BabelRSBackbone", "init": "csia", "pretrained_dir": str(enc_dir)})
    for (_, pa), (_, pb) in zip(a.encoder.state_dict().items(), b.encoder.state_dict().items(),
                                strict=True):  # fmt: skip
        assert torch.equal(pa, pb)  # both loaded from the pretraining output
    frozen = {n for n, p in a.encoder.named_parameters() if not p.requires_grad}
    assert "_conv_stem.weight" in frozen and "_blocks.2._project_conv.weight" in frozen
    assert "_blocks.3._project_conv.weight" not in frozen  # hidden state 4
    with pytest.raises(ValueError, match="encoder 'efficientnet_lite0'"):
        MODELS.build({"type": "BabelRSBackbone", "encoder": "vit_tiny", "init": "csia",
                      "pretrained_dir": str(enc_dir)})  # fmt: skip
    with pytest.raises(ValueError, match="encoder_weights"):
        MODELS.build({"type": "BabelRSBackbone", "encoder": "vit_tiny", "init": "imagenet"})


def test_channels_last_gives_the_same_features_and_gradients(tmp_path: Path) -> None:
    from tests.detector.det_fakes import make_fake_encoder

    enc_dir = make_fake_encoder(tmp_path / "enc", seed=3)
    x = torch.randn(2, 3, 64, 96)
    outs, grads = [], []
    for cl in (False, True):
        cfg = {"type": "BabelRSBackbone", "init": "csia", "pretrained_dir": str(enc_dir)}
        bb = MODELS.build({**cfg, "channels_last": cl})
        feats = bb(x)
        sum(f.square().mean() for f in feats).backward()
        outs.append([f.detach() for f in feats])
        grads.append(bb.encoder._blocks[-1]._project_conv.weight.grad.clone())
        # safetensors needs contiguous weights: only the activations go NHWC
        assert bb.encoder._blocks[-1]._project_conv.weight.is_contiguous()
    assert feats[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in (*zip(*outs, strict=True), grads):  # equal up to float summation order
        assert (a - b).abs().max() <= 1e-3 * a.abs().max()


def test_param_groups_layer_decay_and_no_decay_on_1d() -> None:
    bb = MODELS.build({"type": "BabelRSBackbone", "encoder": "vit_tiny", "init": "scratch",
                       "arch": {"depth": 2, "width": 32, "heads": 2}, "layers": [2]})  # fmt: skip
    model = torch.nn.Module()
    model.backbone = bb
    model.head = torch.nn.Linear(4, 4)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, encoder_lr_scale=0.5, layer_decay=0.9)
    by_param = {id(p): g for g in groups for p in g["params"]}
    enc = bb.encoder
    patch = by_param[id(enc.embeddings.patch_embedding.weight)]
    block0 = by_param[id(enc.encoder.layers[0].attn.qkv.weight)]
    block1 = by_param[id(enc.encoder.layers[1].attn.qkv.weight)]
    assert patch["lr"] == pytest.approx(0.5 * 0.9**3)  # L + 1 - 0 with L = 2
    assert block0["lr"] == pytest.approx(0.5 * 0.9**2) and block1["lr"] == pytest.approx(0.5 * 0.9)
    assert by_param[id(model.head.weight)]["lr"] == 1.0 and groups[0]["lr"] == 1.0
    assert by_param[id(model.head.bias)]["weight_decay"] == 0.0
    assert by_param[id(enc.encoder.layers[0].norm1.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.head.weight)]["weight_decay"] == 0.05


def test_guarded_wrapper_logs_pre_clip_norm_and_skips_nonfinite_steps() -> None:
    from mmengine.logging import MessageHub

    MessageHub.get_instance("guard-test")
    w = torch.nn.Parameter(torch.ones(3))
    opt = GuardedOptimWrapper(torch.optim.SGD([w], lr=0.1), max_norm=1.0)
    opt.update_params((w * 10).sum())  # gradient (10, 10, 10): norm 17.32, clipped to 1
    assert opt.last_grad_norm == pytest.approx(math.sqrt(300))
    assert torch.allclose(w.detach(), torch.full((3,), 1 - 0.1 / math.sqrt(3)))
    before = w.detach().clone()
    opt.update_params((w * float("nan")).sum())
    assert torch.equal(w.detach(), before) and opt.nonfinite_steps == 1
    state = opt.state_dict()
    assert state["nonfinite_steps"] == 1
    fresh = GuardedOptimWrapper(torch.optim.SGD([w], lr=0.1))
    fresh.load_state_dict(state)
    assert fresh.nonfinite_steps == 1
    bf16 = GuardedOptimWrapper(torch.optim.SGD([w], lr=0.1), precision="bf16")
    with bf16.optim_context(torch.nn.Linear(1, 1)):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision"):
        GuardedOptimWrapper(torch.optim.SGD([w], lr=0.1), precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_train_steps(root: Path, precision: str) -> None:
    from mmengine.logging import MessageHub

    from babelrs_core.detector.optim import BabelRSOptimWrapperConstructor

    MessageHub.get_instance(f"amp-{precision}")
    params = tiny_params(root, **{"finetune.init": "scratch", "finetune.precision": precision})
    model = _build(params)
    wrapper = BabelRSOptimWrapperConstructor(
        {"type": "GuardedOptimWrapper", "optimizer": {"type": "AdamW", "lr": 1e-3},
         "precision": precision, "device_type": "cpu", "max_norm": 35.0}
    )(model)  # fmt: skip
    np.random.seed(0)  # the augmented batch does not depend on the tests run before
    random.seed(0)
    batch = _batch(params, root)
    model.measure_grad_cosine = True
    for step in range(8):  # until a step is applied (fp16: once the scale stops overflowing)
        log = model.train_step(batch, wrapper)
        if step >= 1 and math.isfinite(wrapper.last_grad_norm):
            break
    assert math.isfinite(float(log["loss"])) and math.isfinite(wrapper.last_grad_norm)
    assert "gradcos.encoder.dota~sardet" not in log  # measured once, on the first step only
    if precision == "fp16":
        assert "loss_scaler" in wrapper.state_dict()
        # the scaler skips the steps whose scaled gradients overflow, halving its scale each time
        # (the rotated heads' unnormalised deltas start with large gradients)
        assert 0 < wrapper.nonfinite_steps < 8
        assert wrapper.scaler.get_scale() == 2.0**16 / 2**wrapper.nonfinite_steps
    else:
        # bf16 on CPU from a scratch init: the first steps can give NaN gradients (seen with the
        # KLD and the modulated L1 box losses alike, depending on the augmented batch); the
        # guarded wrapper skips and counts them, and a later step is applied
        assert wrapper.nonfinite_steps <= step  # every skipped step came before the applied one


def test_size_groups_give_each_image_its_own_features(root: Path) -> None:
    # IR at 96 px next to 64-px SAR / RGB: the batch is padded to 96, but every image must be
    # predicted exactly as when it is alone (no padding seen by the shared parts)
    params = tiny_params(
        root, **{"finetune.init": "scratch", "finetune.modalities.ir.image_size": 96, **KEEP_ALL}
    )
    model = _build(params).eval()
    batch = _batch(params, root)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        assert tuple(data["inputs"].shape[-2:]) == (96, 96)
        together = model.predict(data["inputs"], data["data_samples"])
        for k in range(4):
            one = {"inputs": [batch["inputs"][k]], "data_samples": [batch["data_samples"][k]]}
            d1 = model.data_preprocessor(one, False)
            alone = model.predict(d1["inputs"], d1["data_samples"])[0].pred_instances
            both = together[k].pred_instances
            assert len(both) > 0 and len(alone) == len(both), (k, len(alone), len(both))
            assert torch.allclose(alone.scores, both.scores, atol=1e-5)
            assert torch.allclose(alone.bboxes, both.bboxes, atol=1e-3)
        model.train()
        losses = model.loss(data["inputs"], data["data_samples"])
    assert {k.split(".")[0] for k in losses} == {"sardet", "dota", "dronevehicle"}
