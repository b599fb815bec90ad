"""finetune.label_fraction: exact, seeded, nested training subsets of one dataset (the others and
the evaluation splits untouched); a scratch start trains every encoder layer and its BatchNorm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babelrs_core.detector.config import source_datasets, start_backbone
from babelrs_core.detector.data import label_subset
from tests.detector.det_fakes import make_fake_manifest, tiny_params

IDS = [f"img{i:03d}" for i in range(40)]


@pytest.mark.parametrize(("fraction", "n"), [(0.1, 4), (0.25, 10), (0.5, 20), (1.0, 40),
                                             (0.01, 1), (0.0125, 1), (0.0375, 2)])  # fmt: skip
def test_exact_counts_round_half_up_and_at_least_one(fraction: float, n: int) -> None:
    kept = label_subset(IDS, fraction, seed=0)
    assert len(kept) == n and len(set(kept)) == n and set(kept) <= set(IDS)
    assert kept == [i for i in IDS if i in kept]  # input order kept


def test_seeded_deterministic_order_free_and_nested() -> None:
    assert label_subset(IDS, 0.25, 3) == label_subset(IDS, 0.25, 3)
    assert set(label_subset(IDS[::-1], 0.25, 3)) == set(label_subset(IDS, 0.25, 3))
    assert label_subset(IDS, 0.25, 3) != label_subset(IDS, 0.25, 4)
    for seed in range(5):
        small, mid = set(label_subset(IDS, 0.1, seed)), set(label_subset(IDS, 0.25, seed))
        assert small < mid < set(label_subset(IDS, 1.0, seed))
    with pytest.raises(ValueError, match="label fraction"):
        label_subset(IDS, 0.0, 0)


def test_only_the_named_dataset_and_only_training_is_subsampled(tmp_path: Path) -> None:
    from mmdet.registry import DATASETS

    from babelrs_core.detector.config import register_all

    register_all()
    make_fake_manifest(tmp_path)
    params = tiny_params(tmp_path, **{"finetune.label_fraction.dronevehicle": 0.25, "seed": 1})
    cfgs = {c["dataset"]: c for c in source_datasets(params, tmp_path / "manifest.parquet")}
    assert {d: c["fraction"] for d, c in cfgs.items()} == {
        "sardet": 1.0, "dota": 1.0, "dronevehicle": 0.25}  # fmt: skip
    sizes = {d: len(DATASETS.build(c)) for d, c in cfgs.items()}
    assert sizes == {"sardet": 6, "dota": 6, "dronevehicle": 2}  # 0.25 x 6 = 1.5 -> 2
    ids = [DATASETS.build(cfgs["dronevehicle"])[i]["data_samples"].img_id for i in range(2)]
    again = [DATASETS.build(cfgs["dronevehicle"])[i]["data_samples"].img_id for i in range(2)]
    assert ids == again
    test = source_datasets(params, tmp_path / "manifest.parquet", split="test")
    assert {c["fraction"] for c in test} == {1.0}


def test_scratch_trains_every_layer_and_its_batchnorm_statistics(tmp_path: Path) -> None:
    from babelrs_core.detector.backbone import BabelRSBackbone
    from babelrs_core.detector.config import model_config

    params = tiny_params(tmp_path, **{"finetune.frozen_layers": 5, "finetune.bn": "frozen"})
    assert start_backbone(params.finetune) == {"bn": "frozen", "frozen_layers": 5}
    scratch = params.model_copy(deep=True)
    scratch.finetune.init = "scratch"
    assert start_backbone(scratch.finetune) == {"bn": "train", "frozen_layers": -1}
    norm = {m: {"mean": [0.0] * 3, "std": [1.0] * 3} for m in ("sar", "rgb", "ir")}
    bb = model_config(scratch, norm)["backbone"]
    assert (bb["bn"], bb["frozen_layers"]) == ("train", -1)
    kwargs = {k: bb[k] for k in ("encoder", "init", "bn", "frozen_layers", "layers")}
    backbone = BabelRSBackbone(**kwargs)
    assert all(p.requires_grad for p in backbone.encoder.parameters())
    backbone.train()
    bns = [m for m in backbone.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = bns[0].running_mean.clone()
    backbone(torch.rand(2, 3, 64, 64) * 4)
    assert not torch.equal(before, bns[0].running_mean), "scratch BatchNorm statistics train"
    # the fingerprint records what the run trains with (old frozen scratch runs are not reused)
    from babelrs_core.detector.train import fingerprint

    fp = fingerprint(scratch, tmp_path / "m.parquet", None)
    assert fp["backbone"] == {"bn": "train", "frozen_layers": -1}
