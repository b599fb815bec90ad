"""Pretraining data: held-out images, per-modality statistics, region slots, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babelrs_core.config import captions_beside
from babelrs_core.data.image_source import FileSource
from babelrs_core.pretrain.dataset import IGNORE, PixelStore, build_data
from babelrs_core.pretrain.instructions import flipped
from tests.pretrain.fakes import make_fake_dataset

torch.set_num_threads(1)


def encode(text: str) -> list[int]:  # a stand-in tokenizer: one id per word
    return [100 + (sum(map(ord, w)) % 900) for w in text.split()]


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_fake_dataset(tmp_path_factory.mktemp("fake"))


def build(fake: Path, **kw):
    args = {
        "image_size": 32,
        "holdout_fraction": 0.25,
        "eval_splits": ["val"],
        "seed": 0,
        "captions": captions_beside(fake),
        "eos_id": 2,
        "sep_ids": [3],
        "pad_id": 0,
        "region_token": True,
    }
    return build_data(fake, encode, **{**args, **kw})


def test_images_not_prompts_are_held_out(fake: Path) -> None:
    data = build(fake)
    train_imgs = {data.image_ids[e.image] for e in data.train}
    held_imgs = {data.image_ids[e.image] for e in data.heldout}
    assert train_imgs and held_imgs and not train_imgs & held_imgs
    assert all("/train/" in i for i in train_imgs)
    assert any("/val/" in i for i in held_imgs)
    assert {e.modality for e in data.heldout} == {"sar", "rgb", "ir"}
    assert {e.task for e in data.train if e.modality == "sar"} == {
        "region",
        "count",
        "presence",
        "listing",
        "caption",
    }


def test_normalisation_statistics_per_modality_from_training_images(fake: Path) -> None:
    data = build(fake)
    rows = sorted({e.image for e in data.train if e.modality == "ir"})
    x = data.pixels[rows].double()
    assert data.norm["ir"]["mean"][0] == pytest.approx(float(x[:, 0].mean()), abs=1e-3)
    assert data.norm["ir"]["std"][0] == pytest.approx(float(x[:, 0].std()), abs=1e-3)
    assert len(set(data.norm["sar"]["mean"])) == 1  # grey sensor replicated to 3 channels
    assert len(set(data.norm["rgb"]["mean"])) == 3
    z = data.normalized(rows)
    assert abs(float(z.mean())) < 1e-3 and float(z.std()) == pytest.approx(1.0, abs=1e-2)


def test_region_slot_follows_the_box_and_collation_masks_the_prompt(fake: Path) -> None:
    data = build(fake)
    region = next(e for e in data.train if e.task == "region")
    assert region.region_at >= 0
    head = region.text.question[: region.text.question.index("</box>") + len("</box>")]
    assert list(region.question[: region.region_at]) == encode(head)
    assert list(region.question[region.region_at : region.region_at + 2]) == [0, 0]
    other = next(e for e in data.train if e.task == "count")
    batch = data.collate([region, other])
    assert batch.region_at.tolist() == [region.region_at, -1]
    assert batch.boxes[0].tolist() == pytest.approx(list(region.text.box))
    assert (batch.labels[1, len(other.question) + 1 :] != IGNORE).sum() == len(other.answer)
    assert batch.text_mask[1].sum() == len(other.question) + 1 + len(other.answer)
    plain = build(fake, region_token=False)
    assert all(e.region_at == -1 for e in plain.train)


def test_batches_depend_only_on_seed_and_step(fake: Path) -> None:
    data = build(fake)
    assert data.sample(5, 8, seed=1) == build(fake).sample(5, 8, seed=1)
    assert data.sample(5, 8, seed=1) != data.sample(6, 8, seed=1)
    weights = data.sampling_weights()
    by_mod = {
        m: float(sum(w for w, e in zip(weights, data.train, strict=True) if e.modality == m))
        for m in ("sar", "rgb", "ir")
    }
    assert all(v == pytest.approx(1 / 3) for v in by_mod.values())
    off = build(fake, task_weights={"caption": 0.0, "listing": 0.0})
    assert not {e.task for e in off.train} & {"caption", "listing"}


def test_flips_move_pixels_boxes_and_box_text_together(fake: Path) -> None:
    data = build(fake, hflip=0.5, vflip=0.5)
    region = next(e for e in data.train if e.task == "region")
    count = next(e for e in data.train if e.task == "count")
    batch = data.collate([region] * 4 + [count], flips=[0, 1, 2, 3, 3])
    img = data.normalized([region.image])[0]
    assert torch.equal(batch.images[1], img.flip(2)) and torch.equal(batch.images[2], img.flip(1))
    x1, y1, x2, y2 = region.text.box
    assert batch.boxes[1].tolist() == pytest.approx([1 - x2, y1, 1 - x1, y2])
    assert batch.boxes[3].tolist() == pytest.approx([1 - x2, 1 - y2, 1 - x1, 1 - y1])
    assert batch.text_ids[1].tolist() != batch.text_ids[0].tolist()  # the box text changed
    assert batch.region_at[3] >= 0 and batch.region_at[4] == -1
    flipped_question = flipped(region.text, True, True).question
    assert f"[{round((1 - x2) * 1000)},{round((1 - y2) * 1000)}," in flipped_question
    head, tail = flipped_question.split("</box>")
    assert list(region.view(3)[0]) == [*encode(head + "</box>"), 0, 0, *encode(tail)]
    idx, flips, _ = data.draw(3, 64, seed=0)
    assert idx == data.sample(3, 64, seed=0) and set(flips) == {0, 1, 2, 3}
    assert build(fake).draw(3, 8, 0)[1] == [0] * 8


def test_visual_dropout_codes_only_for_region_prompts(fake: Path) -> None:
    data = build(fake, region_prefix_dropout=0.5, region_roi_dropout=0.5)
    idx, _, drops = data.draw(1, 256, seed=0)
    assert set(drops) == {0, 1, 2, 3}
    assert all(c == 0 for i, c in zip(idx, drops, strict=True) if data.train[i].region_at < 0)
    batch = data.collate([data.train[i] for i in idx[:6]], drops=drops[:6])
    assert batch.drop_prefix.tolist() == [bool(c & 1) for c in drops[:6]]
    assert batch.drop_roi.tolist() == [bool(c & 2) for c in drops[:6]]
    assert data.collate([data.train[0]]).drop_roi is None


def test_images_beyond_the_memory_bound_are_decoded_on_demand_with_the_same_pixels(
    fake: Path,
) -> None:
    held = build(fake)
    assert held.pixels.preloaded
    n = len(held.pixels)
    bound = 3 * 32 * 32 * (n // 4)  # a quarter of the resized images
    lazy = build(fake, max_pixel_bytes=bound)
    assert not lazy.pixels.preloaded
    rows = list(range(n)) + list(range(n - 1, -1, -1))
    assert torch.equal(lazy.pixels[rows], held.pixels[rows])
    assert lazy.norm == held.norm  # statistics streamed through the bounded store
    batch = held.collate([held.train[i] for i in range(4)])
    assert torch.equal(lazy.collate([lazy.train[i] for i in range(4)]).images, batch.images)
    stats = lazy.pixels._lru.stats()
    assert 0 < stats["peak_bytes"] <= bound and stats["evictions"] > 0


def test_an_empty_pixel_store_gives_empty_batches() -> None:
    """No images fit any bound, so the store holds an empty (0, 3, S, S) uint8 tensor (it used to
    pass that dtype positionally to torch.zeros: a TypeError)."""
    store = PixelStore([], 16, FileSource(), 1 << 20)
    assert store.preloaded and len(store) == 0
    batch = store[[]]
    assert batch.shape == (0, 3, 16, 16) and batch.dtype == torch.uint8
