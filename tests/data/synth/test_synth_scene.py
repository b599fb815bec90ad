"""Scene graphs: captions from the graph, object placement rules, SAR JPEG option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from babelrs_core.concepts import class_info
from babelrs_core.config import Params
from babelrs_core.data.layout import scenes_file
from babelrs_core.data.synth.cover import ASPHALT, FIELD, WATER
from babelrs_core.data.synth.generate import generate_soi_mini, render_image
from babelrs_core.data.synth.scene import (
    SceneObject,
    caption,
    count_phrase,
    empty_scene,
)


def _obj(i: int, cls: str, kind: str, placement: str, on: str, **attrs) -> SceneObject:
    return SceneObject(
        i,
        cls,
        kind,
        20.0 + 10 * i,
        20.0,
        4.5,
        1.8,
        1.5,
        0.0,
        0.25,
        "painted metal",
        placement,
        on,
        dict(attrs),
    )


def test_count_phrase() -> None:
    assert count_phrase("dronevehicle", {"car": 3, "truck": 1}) == "three cars and a truck"
    assert count_phrase("dronevehicle", {"bus": 2}) == "two buses"
    assert count_phrase("sardet", {"aircraft": 1}) == "an airplane"
    assert count_phrase("dronevehicle", {"truck": 1}, articles=False) == "one truck"
    assert count_phrase("dota", {"small-vehicle": 2, "plane": 1, "ship": 1}) == (
        "two cars, an airplane and a ship"
    )


def test_caption_from_graph() -> None:
    scene = empty_scene("dronevehicle", 64, 64, 0.25, cover=FIELD)
    scene.cover[20:30] = ASPHALT
    scene.objects = [
        _obj(0, "car", "car", "road", "asphalt", running=False),
        _obj(1, "car", "car", "road", "asphalt", running=False),
        _obj(2, "truck", "truck", "road", "asphalt", running=True),
        _obj(3, "car", "car", "road", "asphalt", running=False),
    ]
    scene.sensor = {"night": True}
    assert caption(scene) == (
        "three cars and a truck on a road next to a field at night; one truck is running"
    )
    scene.objects = []
    assert caption(scene) == "no objects, only a field at night"


def test_generated_captions_count_the_objects(params: Params, generated) -> None:
    raw, _ = generated
    for ds in ("sardet", "dota", "dronevehicle"):
        for split in getattr(params.soi_mini, ds).splits:
            for line in scenes_file(raw, ds, split).read_text().splitlines():
                scene = json.loads(line)
                head = scene["caption"].split(";")[0]
                for cls in {o["class"] for o in scene["objects"]}:
                    info = class_info(ds, cls)
                    assert info.concept in head, (scene["caption"], cls)


def test_placement_rules(params: Params) -> None:
    """Ships float, harbors straddle the shore, vehicles on roads / lots sit on asphalt."""
    for ds in ("sardet", "dota", "dronevehicle"):
        for split, n in getattr(params.soi_mini, ds).splits.items():
            for i in range(n):
                scene, render = render_image(params, ds, split, i)
                for o in scene.objects:
                    under = scene.cover[render.layers == o.index]
                    if o.kind == "ship":
                        assert (under == WATER).all()
                    elif o.kind == "harbor":
                        assert 0.5 <= (under == WATER).mean() < 1.0
                    elif o.placement in ("road", "lot"):
                        assert (under == ASPHALT).all()
                    elif o.kind != "bridge":
                        assert not (under == WATER).any()


def test_sar_jpeg_fraction_writes_jpg(params: Params, make_params, tmp_path: Path) -> None:
    sar = {**params.soi_mini.sar.model_dump(), "jpeg_fraction": 1.0}
    sardet = {**params.soi_mini.sardet.model_dump(), "splits": {"train": 2}}
    empty = {"splits": {}}
    p = make_params(
        sar=sar,
        sardet=sardet,
        dota={**params.soi_mini.dota.model_dump(), **empty},
        dronevehicle={**params.soi_mini.dronevehicle.model_dump(), **empty},
    )
    raw = tmp_path / "raw"
    generate_soi_mini(p, raw, progress=False)
    doc = json.loads((raw / "SARDet_100K" / "Annotations" / "train.json").read_text())
    names = [im["file_name"] for im in doc["images"]]
    assert names and all(n.endswith(".jpg") for n in names)
    for n in names:
        assert (raw / "SARDet_100K" / "JPEGImages" / "train" / n).read_bytes()[:2] == b"\xff\xd8"
    assert not list((raw / "SARDet_100K" / "JPEGImages" / "train").glob("*.png"))
    assert np.all(
        [
            json.loads(x)["image"].endswith(".jpg")
            for x in scenes_file(raw, "sardet", "train").read_text().splitlines()
        ]
    )
