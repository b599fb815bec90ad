"""SOI-mini's fast mode (``soi_mini.render: fast``, docs/soi_mini.md §7) writes the same real
formats (the full mode's format, importer, IR and layout checks run on its output unchanged),
passes validation, keeps the label statistics of full mode and is deterministic; the default full
output is byte-for-byte what it was before fast mode existed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import stats
from typer.testing import CliRunner

import tests.data.synth.test_synth_formats as format_checks
import tests.data.synth.test_synth_generate as generate_checks
import tests.data.synth.test_synth_ir as ir_checks
from babelrs_core.cli import app
from babelrs_core.config import Params, load_params
from babelrs_core.data.importing import import_datasets
from babelrs_core.data.layout import dataset_roots, scenes_file
from babelrs_core.data.synth import fast
from babelrs_core.data.synth import generate as gen
from babelrs_core.data.synth.generate import generate_soi_mini, with_images_per_dataset
from babelrs_core.data.validation.stage import run_validation
from tests.data.synth.conftest import TINY, tiny_params
from tests.images import assert_png

ROOT = Path(__file__).resolve().parents[3]
DATASETS = ("sardet", "dota", "dronevehicle")


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def fast_params() -> Params:
    return tiny_params(render="fast")


@pytest.fixture(scope="module")
def fast_generated(fast_params: Params, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fast") / "raw"
    return out, generate_soi_mini(fast_params, out, progress=False)


# ----------------------------------------------------------------------------------------------
# The real formats


FULL_MODE_CHECKS: list[Callable[[Params, Any], None]] = [
    format_checks.test_sardet_coco,
    format_checks.test_dota_label_txt,
    format_checks.test_dronevehicle_xml_and_border,
    format_checks.test_scene_graph_records,
    format_checks.test_real_importers_read_soi_mini,
    generate_checks.test_counts_and_layout,
    ir_checks.test_contrast_sign_survives_the_sensor,
    ir_checks.test_night_and_running_are_recorded,
]


@pytest.mark.parametrize("check", FULL_MODE_CHECKS, ids=lambda f: f.__name__)
def test_fast_output_passes_the_full_mode_checks(
    check: Callable[[Params, Any], None], fast_params: Params, fast_generated
) -> None:
    """COCO / DOTA labelTxt / DroneVehicle XML with border and label quirks, scene graphs, the
    real importers without a drop, the folder layout, IR contrast signs on the written JPEGs."""
    check(fast_params, fast_generated)


def test_ir_contrast_survives_at_the_real_frame(tmp_path: Path) -> None:
    """At DroneVehicle's 640 x 512 frame and the shipped IR settings (TINY's frame is 160 x 128),
    every vehicle's recorded contrast sign shows on the written JPEG, by several grey levels."""
    params = load_params(ROOT / "params.yaml", {
        "soi_mini.render": "fast", "soi_mini.dronevehicle.splits": {"train": 12},
        "soi_mini.sardet.splits": {"train": 0}, "soi_mini.dota.splits": {"train": 0}})  # fmt: skip
    raw = tmp_path / "raw"
    counts = generate_soi_mini(params, raw, progress=False)
    assert counts["dronevehicle"]["train"]["objects"] >= 100
    ir_checks.test_contrast_sign_survives_the_sensor(params, (raw, counts))


def test_fast_images_decode_at_the_real_sizes(fast_params: Params, fast_generated) -> None:
    raw, _ = fast_generated
    sm = fast_params.soi_mini
    for ds in DATASETS:
        size = getattr(sm, ds).image_size
        for split in getattr(sm, ds).splits:
            for line in scenes_file(raw, ds, split).read_text().splitlines():
                scene = json.loads(line)
                assert scene["sensor"]["render"] == "fast" and scene["sensor"]["ground"]
                path = raw / scene["image"]
                if path.suffix == ".png":  # SARDet and DOTA: the plain PNG writer
                    pixels = assert_png(path, size=(size.width, size.height), min_colours=20)
                    assert pixels.shape[2] == 4 and (pixels[..., 3] == 255).all()
                else:  # DroneVehicle: JPEG with the white border
                    b = sm.ir.border_px
                    with Image.open(path) as im:
                        assert im.format == "JPEG" and im.mode == "RGB"
                        assert im.size == (size.width + 2 * b, size.height + 2 * b)


def test_fast_output_passes_validation(tmp_path: Path) -> None:
    """Imported like real data, the manifest and every image pass the validation stage."""
    params = tiny_params(
        render="fast",
        dronevehicle={**TINY["soi_mini"]["dronevehicle"], "splits": {"train": 4, "val": 2}},
    )
    params = params.model_copy(
        update={"validation": params.validation.model_copy(update={"data_docs": False,
                                                                    "train_classes": "observed"})}
    )  # fmt: skip
    raw = tmp_path / "raw"
    generate_soi_mini(params, raw, progress=False)
    report = import_datasets(dataset_roots(raw), tmp_path / "m.parquet", params, progress=False)
    assert not report.dropped
    result = run_validation(params, tmp_path / "m.parquet", tmp_path / "validation")  # raises
    assert result.passed and not result.failures
    images = sum(sum(getattr(params.soi_mini, ds).splits.values()) for ds in DATASETS)
    assert result.images == images


# ----------------------------------------------------------------------------------------------
# Label statistics


def _label_statistics(params: Params, dataset: str, n: int) -> dict[str, Any]:
    per_image, classes, sizes, difficult, typo, bndbox = [], Counter(), [], [], [], []
    for i in range(n):
        scene, _ = gen.render_image(params, dataset, "train", i)
        per_image.append(len(scene.objects))
        for o in scene.objects:
            classes[o.cls] += 1
            sizes.append(np.sqrt(o.length_px * o.width_px))
            difficult.append(o.attrs.get("difficult", 0))
            typo.append(o.attrs.get("raw_name", o.cls) != o.cls)
            bndbox.append(o.attrs.get("label_geometry") == "bndbox")
    total = sum(classes.values())
    return {
        "objects_per_image": float(np.mean(per_image)),
        "class_share": {c: k / total for c, k in classes.items()},
        "sizes": np.array(sizes),
        "difficult": float(np.mean(difficult)),
        "typo": float(np.mean(typo)),
        "bndbox": float(np.mean(bndbox)),
    }


@pytest.mark.parametrize("dataset", DATASETS)
def test_label_statistics_match_full_mode(dataset: str) -> None:
    """30 images per mode: the classes an image asks for are drawn first in both modes (the same
    draws), so the counts and class mix differ only where placement succeeds differently; sizes,
    DOTA difficult flags and DroneVehicle label quirks are drawn independently. Tolerances are a
    few standard errors at this sample size (measured: objects per image 2.73 / 2.80, 2.15 / 2.15,
    3.00 / 3.02 full / fast on 40 images; size KS p-values 0.85, 0.80, 0.55 on these 30)."""
    n = 30
    full = _label_statistics(tiny_params(render="full"), dataset, n)
    quick = _label_statistics(tiny_params(render="fast"), dataset, n)
    assert quick["objects_per_image"] == pytest.approx(full["objects_per_image"], rel=0.1)
    for cls in set(full["class_share"]) | set(quick["class_share"]):
        got, want = quick["class_share"].get(cls, 0.0), full["class_share"].get(cls, 0.0)
        assert abs(got - want) <= 0.08, (cls, got, want)
    # box sizes (sqrt of the oriented area, px): one distribution by the two-sample KS test
    ks = stats.ks_2samp(quick["sizes"], full["sizes"])
    assert ks.pvalue > 0.05, (ks, np.median(quick["sizes"]), np.median(full["sizes"]))
    assert abs(quick["difficult"] - full["difficult"]) <= 0.05
    assert abs(quick["typo"] - full["typo"]) <= 0.12
    assert abs(quick["bndbox"] - full["bndbox"]) <= 0.12
    if dataset == "dronevehicle":  # TINY exaggerates the quirks: both modes write them
        assert min(quick["typo"], quick["bndbox"]) > 0.1


# ----------------------------------------------------------------------------------------------
# Determinism


def test_fast_is_deterministic(fast_params: Params, fast_generated, tmp_path: Path) -> None:
    """Same params, same bytes: again in this process (grounds already made) ..."""
    first, counts = fast_generated
    again = generate_soi_mini(fast_params, tmp_path / "again", progress=False)
    assert again == counts
    assert _digests(tmp_path / "again") == _digests(first)
    # ... and an image does not depend on what the process rendered before it
    fast._BANKS.clear()
    scene, render = gen.render_image(fast_params, "dronevehicle", "train", 3)
    assert len(fast._BANKS[next(iter(fast._BANKS))]._grounds) == 1
    for i in range(3):
        gen.render_image(fast_params, "dronevehicle", "train", i)
    scene2, render2 = gen.render_image(fast_params, "dronevehicle", "train", 3)
    assert scene.to_json() == scene2.to_json()
    assert (render.image == render2.image).all()


def test_another_seed_gives_other_fast_images(fast_params: Params) -> None:
    other = fast_params.model_copy(update={"seed": fast_params.seed + 1})
    a, ra = gen.render_image(fast_params, "sardet", "train", 0)
    b, rb = gen.render_image(other, "sardet", "train", 0)
    assert a.to_json() != b.to_json() and not (ra.image == rb.image).all()


# ----------------------------------------------------------------------------------------------
# The default (full) output is unchanged

#: sha256[:16] of every file of the default params.yaml generated with these splits, recorded at
#: commit 9e4a1ad (before fast mode) with the pinned requirements on x86-64. A deliberate change
#: of the full renderers changes them: regenerate and replace them in the same commit.
GOLDEN_SPLITS = {
    "soi_mini.sardet.splits": {"train": 2, "val": 1},
    "soi_mini.dota.splits": {"train": 2},
    "soi_mini.dronevehicle.splits": {"train": 1, "test": 1},
}
GOLDEN = {
    "DOTA/train/images/P0000.png": "11b6fa83dfb0d683",
    "DOTA/train/images/P0001.png": "818d6016b0b17cbe",
    "DOTA/train/labelTxt/P0000.txt": "eae3be8d05dd0df3",
    "DOTA/train/labelTxt/P0001.txt": "7ca0f609a6e5cc8f",
    "DroneVehicle/test/testimgr/00001.jpg": "9f57ae9850cd4881",
    "DroneVehicle/test/testlabelr/00001.xml": "ed4b1146f3b8e775",
    "DroneVehicle/train/trainimgr/00001.jpg": "003575ae33cc24c3",
    "DroneVehicle/train/trainlabelr/00001.xml": "c009f347df49427b",
    "SARDet_100K/Annotations/train.json": "10a7231fbc5a7973",
    "SARDet_100K/Annotations/val.json": "07faa23aaabb2757",
    "SARDet_100K/JPEGImages/train/000001.png": "0b2fe62ef2f1f589",
    "SARDet_100K/JPEGImages/train/000002.png": "4298e00210794e00",
    "SARDet_100K/JPEGImages/val/000003.png": "c0aac46882d78df0",
    "scenes/dota/train.jsonl": "a96da6ca9b051f45",
    "scenes/dronevehicle/test.jsonl": "c9588aea5a25bce5",
    "scenes/dronevehicle/train.jsonl": "bfc85115c74ce79d",
    "scenes/sardet/train.jsonl": "47c1871e70055162",
    "scenes/sardet/val.jsonl": "49ca3d3cd671024c",
}


def test_default_full_output_is_unchanged(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml", GOLDEN_SPLITS)
    assert params.soi_mini.render == "full"
    generate_soi_mini(params, tmp_path / "raw", progress=False)
    got = _digests(tmp_path / "raw")
    changed = {k: v for k, v in got.items() if GOLDEN.get(k) != v}
    assert got == GOLDEN, f"full-mode output changed: {json.dumps(changed, indent=1)}"


# ----------------------------------------------------------------------------------------------
# N images per dataset


def test_images_per_dataset_keeps_the_split_proportions(fast_params: Params) -> None:
    default = load_params(ROOT / "params.yaml")
    for n in (0, 1, 7, 100, 5000):
        p = with_images_per_dataset(default, n)
        for ds in DATASETS:
            splits = getattr(p.soi_mini, ds).splits
            assert sum(splits.values()) == n
            assert list(splits) == list(getattr(default.soi_mini, ds).splits)
    big = with_images_per_dataset(default, 5000).soi_mini
    assert big.sardet.splits == {"train": 2500, "val": 417, "test": 2083}  # 48 : 8 : 40
    assert big.dota.splits == {"train": 2727, "val": 2273}  # 48 : 40
    assert default.soi_mini.sardet.splits == {"train": 48, "val": 8, "test": 40}  # not modified
    zero = fast_params.model_copy(deep=True)
    zero.soi_mini.dota.splits = {"train": 0, "val": 0}
    assert with_images_per_dataset(zero, 5).soi_mini.dota.splits == {"train": 3, "val": 2}


def test_cli_generates_n_fast_images_per_dataset(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "raw"
    argv = ["data", "generate", "--params", str(params_file), "--set", "soi_mini.render=fast",
            "--images-per-dataset", "7", "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    for ds in DATASETS:
        assert sum(c["images"] for c in counts[ds].values()) == 7
    assert counts["sardet"] == {
        "train": {"images": 6, "objects": counts["sardet"]["train"]["objects"]},
        "val": {"images": 1, "objects": counts["sardet"]["val"]["objects"]},
    }  # TINY's 4 : 1
    assert len(list((out / "DOTA").rglob("*.png"))) == 7
    assert len(list((out / "DroneVehicle").rglob("*.jpg"))) == 7
    assert len(list((out / "SARDet_100K" / "JPEGImages").rglob("*.png"))) == 7
