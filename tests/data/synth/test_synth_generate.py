"""SOI-mini generation: determinism, counts, the real folder layouts, atomic replacement."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from babelrs_core.config import Params
from babelrs_core.data.layout import dataset_roots, scenes_file
from babelrs_core.data.synth import generate as gen
from babelrs_core.data.synth.generate import generate_soi_mini


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_params_give_byte_identical_files(params: Params, generated, tmp_path: Path) -> None:
    first, _ = generated
    again = generate_soi_mini(params, tmp_path / "again", progress=False)
    assert again == generated[1]
    a, b = _digests(first), _digests(tmp_path / "again")
    assert a == b
    assert len(a) > 30


def test_another_seed_gives_other_images(params: Params, tmp_path: Path) -> None:
    other = params.model_copy(update={"seed": params.seed + 1})
    s1, _ = gen.render_image(params, "dota", "train", 0)
    s2, _ = gen.render_image(other, "dota", "train", 0)
    assert s1.to_json() != s2.to_json()


def test_image_does_not_depend_on_other_splits(params: Params, make_params) -> None:
    bigger = make_params(
        dota={**params.soi_mini.dota.model_dump(), "splits": {"train": 9, "val": 1}}
    )
    a, ra = gen.render_image(params, "dota", "val", 0)
    b, rb = gen.render_image(bigger, "dota", "val", 0)
    assert (ra.image == rb.image).all()
    assert a.stem != b.stem  # DOTA numbers its images across splits, like the real release


def test_counts_and_layout(params: Params, generated) -> None:
    raw, counts = generated
    roots = dataset_roots(raw)
    for ds in ("sardet", "dota", "dronevehicle"):
        spec = getattr(params.soi_mini, ds)
        assert set(counts[ds]) == set(spec.splits)
        for split, n in spec.splits.items():
            assert counts[ds][split]["images"] == n
            lines = scenes_file(raw, ds, split).read_text().splitlines()
            assert len(lines) == n
    sar = roots["sardet"]
    for split, n in params.soi_mini.sardet.splits.items():
        assert (sar / "Annotations" / f"{split}.json").is_file()
        assert len(list((sar / "JPEGImages" / split).glob("*.png"))) == n
    dota = roots["dota"]
    for split, n in params.soi_mini.dota.splits.items():
        images = sorted(p.stem for p in (dota / split / "images").glob("P*.png"))
        labels = sorted(p.stem for p in (dota / split / "labelTxt").glob("P*.txt"))
        assert images == labels and len(images) == n
        assert all(len(s) == 5 and s[1:].isdigit() for s in images)
    dv = roots["dronevehicle"]
    for split, n in params.soi_mini.dronevehicle.splits.items():
        images = sorted(p.stem for p in (dv / split / f"{split}imgr").glob("*.jpg"))
        labels = sorted(p.stem for p in (dv / split / f"{split}labelr").glob("*.xml"))
        assert images == labels == [f"{i:05d}" for i in range(1, n + 1)]
    # nothing else at the top level (no temporaries left behind)
    assert sorted(p.name for p in raw.iterdir()) == [
        "DOTA",
        "DroneVehicle",
        "SARDet_100K",
        "scenes",
    ]
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]


def test_failure_leaves_previous_output_untouched(
    params: Params, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    real = gen.render_image
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "render_image", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_soi_mini(params, out, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
