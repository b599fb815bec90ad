"""Detector data: the multi-source sampler, manifest datasets, transforms, statistics."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from babelrs_core.detector.config import register_all

torch.set_num_threads(1)
register_all()

from babelrs_core.detector.data import (  # noqa: E402
    ManifestDetDataset,
    MultiSourceRatioSampler,
    modality_statistics,
    rot90_boxes,
    train_pipeline,
)
from tests.detector.det_fakes import make_fake_manifest  # noqa: E402


class _Src:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Concat:
    def __init__(self, sizes: list[int]) -> None:
        self.datasets = [_Src(n) for n in sizes]


def _source(i: int, sizes: list[int]) -> int:
    return int(np.searchsorted(np.cumsum(sizes), i, side="right"))


def test_every_batch_has_the_ratio_and_sources_are_shuffled_streams() -> None:
    sizes = [5, 3, 4]
    s = MultiSourceRatioSampler(_Concat(sizes), batch_size=8, source_ratio=[2, 1, 1], seed=3)
    idx = list(itertools.islice(iter(s), 8 * 30))
    for b in range(30):
        batch = idx[8 * b : 8 * b + 8]
        assert [_source(i, sizes) for i in batch] == [0, 0, 0, 0, 1, 1, 2, 2]
    # each source is an infinite stream of permutations: every pass covers it exactly once
    sar = [i for i in idx if _source(i, sizes) == 0]
    for k in range(len(sar) // 5):
        assert sorted(sar[5 * k : 5 * k + 5]) == [0, 1, 2, 3, 4]
    assert sar[:5] != sorted(sar[:5]) or sar[5:10] != sorted(sar[5:10])


def test_sampler_is_deterministic_and_skip_resumes_the_same_stream() -> None:
    sizes = [6, 2, 2]
    a = list(
        itertools.islice(iter(MultiSourceRatioSampler(_Concat(sizes), 4, [2, 1, 1], seed=1)), 40)
    )
    b = MultiSourceRatioSampler(_Concat(sizes), 4, [2, 1, 1], seed=1)
    b.skip(12)
    assert list(itertools.islice(iter(b), 28)) == a[12:]
    c = list(
        itertools.islice(iter(MultiSourceRatioSampler(_Concat(sizes), 4, [2, 1, 1], seed=2)), 40)
    )
    assert c != a


def test_sampler_rejects_bad_ratios() -> None:
    with pytest.raises(ValueError, match="multiple"):
        MultiSourceRatioSampler(_Concat([2, 2, 2]), 5, [2, 1, 1], seed=0)
    with pytest.raises(ValueError, match="ratios"):
        MultiSourceRatioSampler(_Concat([2, 2]), 4, [2, 1, 1], seed=0)
    with pytest.raises(TypeError):
        MultiSourceRatioSampler(_Src(3), 4, [2, 1, 1], seed=0)


def test_rot90_boxes_follow_the_rotated_image() -> None:
    from mmdet.structures.bbox import HorizontalBoxes

    h, w = 30, 50
    img = np.zeros((h, w), np.uint8)
    img[5:12, 20:41] = 1  # box x 20..41, y 5..12
    boxes = HorizontalBoxes(torch.tensor([[20.0, 5.0, 41.0, 12.0]]))
    for k in (1, 2, 3):
        rot = np.rot90(img, k)
        ys, xs = np.nonzero(rot)
        expect = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        got = rot90_boxes(boxes, k, w, h).tensor[0].tolist()
        assert got == pytest.approx(expect), k


@pytest.fixture(scope="module")
def fake_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_manifest(tmp_path_factory.mktemp("detdata"))


def test_manifest_dataset_items_and_pipeline(fake_manifest: Path) -> None:
    cached = {"source": "files", "cache_mb": 8}
    ds = ManifestDetDataset(
        str(fake_manifest),
        "dota",
        "train",
        pipeline=train_pipeline("hbox", 96, 0.5, 0.5, 0.5, cached),
    )
    assert len(ds) == 6 and ds.metainfo["classes"][0] == "small-vehicle"
    info = ds.get_data_info(0)
    assert info["modality"] == "rgb" and info["dataset"] == "dota"
    assert {i["bbox_label"] for i in info["instances"]} <= {0, 2, 3}  # DOTA order, local labels
    assert any(i["ignore_flag"] for i in info["instances"])  # difficult -> ignored
    out = ds[0]
    sample = out["data_samples"]
    assert out["inputs"].dtype == torch.uint8 and max(out["inputs"].shape[1:]) == 96
    assert sample.metainfo["modality"] == "rgb" and sample.metainfo["dataset"] == "dota"
    assert len(sample.ignored_instances) == 1 and len(sample.gt_instances) == 1
    ir = ManifestDetDataset(
        str(fake_manifest),
        "dronevehicle",
        "train",
        pipeline=train_pipeline("hbox", 64, 0, 0, 0, None),
    )
    x = ir[0]["inputs"]
    assert tuple(x.shape) == (3, 64, 64) and int(x.max()) < 255  # the white border is cropped
    with pytest.raises(ValueError, match="no sardet images"):
        ManifestDetDataset(str(fake_manifest), "sardet", "val")


def test_modality_statistics(fake_manifest: Path) -> None:
    stats = modality_statistics(fake_manifest, ["sar", "rgb"])
    assert set(stats) == {"sar", "rgb"}
    assert len(set(stats["sar"]["mean"])) == 1  # grey file replicated to three channels
    assert 60 < stats["sar"]["mean"][0] < 200 and stats["rgb"]["std"][0] > 1


def test_sampler_rank_shares_union_is_the_single_process_batch() -> None:
    """Two ranks of batch 4 draw, at every step, the images one process of batch 8 draws."""
    from types import SimpleNamespace

    from babelrs_core.detector.data import MultiSourceRatioSampler

    concat = SimpleNamespace(datasets=[list(range(7)), list(range(5)), list(range(3))])
    ratio = [2, 1, 1]
    one = iter(MultiSourceRatioSampler(concat, 8, ratio, seed=4, rank=0, world_size=1))
    ranks = [
        iter(MultiSourceRatioSampler(concat, 4, ratio, seed=4, rank=r, world_size=2))
        for r in range(2)
    ]
    for _ in range(12):  # several passes over every source
        single = [next(one) for _ in range(8)]
        shares = [[next(it) for _ in range(4)] for it in ranks]
        assert sorted(shares[0] + shares[1]) == sorted(single)
        for share in shares:  # every rank keeps the 2:1:1 ratio: every head sees images
            assert sum(i < 7 for i in share) == 2 and sum(i >= 12 for i in share) == 1
