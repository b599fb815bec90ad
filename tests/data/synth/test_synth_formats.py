"""SOI-mini's label files follow the real formats (parsed with the stdlib only) and match the
scene graphs; the real importers read them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from babelrs_core.concepts import DATASETS, normalize
from babelrs_core.config import Params
from babelrs_core.data import formats
from babelrs_core.data.layout import dataset_roots, scenes_file
from babelrs_core.geometry import signed_area


def _scenes(raw: Path, dataset: str, split: str) -> list[dict]:
    return [json.loads(line) for line in scenes_file(raw, dataset, split).read_text().splitlines()]


def test_sardet_coco(params: Params, generated) -> None:
    raw, _ = generated
    root = dataset_roots(raw)["sardet"]
    size = params.soi_mini.sardet.image_size
    for split in params.soi_mini.sardet.splits:
        doc = json.loads((root / "Annotations" / f"{split}.json").read_text())
        assert {"images", "annotations", "categories"} <= set(doc)
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        assert cats == {i + 1: n for i, n in enumerate(DATASETS["sardet"].class_names)}
        images = {im["id"]: im for im in doc["images"]}
        assert len(images) == len(doc["images"]) == params.soi_mini.sardet.splits[split]
        scenes = {s["stem"]: s for s in _scenes(raw, "sardet", split)}
        for im in doc["images"]:
            assert im["file_name"] == f"{Path(im['file_name']).stem}.png"
            assert "/" not in im["file_name"]
            assert (im["width"], im["height"]) == (size.width, size.height)
            pic = Image.open(root / "JPEGImages" / split / im["file_name"])
            assert pic.mode == "RGB" and pic.size == (size.width, size.height)
            arr = np.asarray(pic)
            assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
        ann_ids = [a["id"] for a in doc["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        per_image: dict[int, list] = {}
        for a in doc["annotations"]:
            assert a["image_id"] in images and a["category_id"] in cats and a["iscrowd"] == 0
            x, y, w, h = a["bbox"]
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0
            assert x + w <= size.width and y + h <= size.height
            assert a["area"] == pytest.approx(w * h, abs=0.01)
            per_image.setdefault(a["image_id"], []).append(a)
        for iid, im in images.items():
            scene = scenes[Path(im["file_name"]).stem]
            anns = per_image.get(iid, [])
            assert [cats[a["category_id"]] for a in anns] == [o["class"] for o in scene["objects"]]
            assert [a["bbox"] for a in anns] == [o["hbox"] for o in scene["objects"]]


def test_dota_label_txt(params: Params, generated) -> None:
    raw, _ = generated
    root = dataset_roots(raw)["dota"]
    size = params.soi_mini.dota.image_size
    allowed = set(DATASETS["dota"].class_names)
    n_objects = 0
    for split in params.soi_mini.dota.splits:
        for scene in _scenes(raw, "dota", split):
            stem = scene["stem"]
            assert scene["image"] == f"DOTA/{split}/images/{stem}.png"
            pic = Image.open(raw / scene["image"])
            assert pic.mode == "RGB" and pic.size == (size.width, size.height)
            lines = (root / split / "labelTxt" / f"{stem}.txt").read_text().splitlines()
            assert lines[0] == "imagesource:GoogleEarth"
            assert lines[1].startswith("gsd:")
            assert float(lines[1][4:]) == pytest.approx(params.soi_mini.rgb.gsd_m)
            body = lines[2:]
            assert len(body) == len(scene["objects"])
            for line, obj in zip(body, scene["objects"], strict=True):
                tok = line.split()
                assert len(tok) == 10
                poly = np.array([float(v) for v in tok[:8]]).reshape(4, 2)
                assert tok[8] in allowed and tok[8] == obj["class"]
                assert tok[9] in ("0", "1") and int(tok[9]) == obj["difficult"]
                assert signed_area(poly) > 0  # clockwise on screen (y down)
                assert (poly >= 0).all() and (poly[:, 0] <= size.width).all()
                assert (poly[:, 1] <= size.height).all()
                assert np.allclose(poly.ravel(), obj["polygon"], atol=0.051)
                # head vertex: front-left of the object
                a = np.radians(obj["angle_deg"])
                rel = poly[0] - np.array(obj["center"])
                assert rel @ [np.cos(a), np.sin(a)] > 0 and rel @ [-np.sin(a), np.cos(a)] < 0
                n_objects += 1
    assert n_objects > 5


def _xml_int(el: ET.Element, tag: str) -> int:
    node = el.find(tag)
    assert node is not None and node.text is not None, tag
    return int(node.text)


def test_dronevehicle_xml_and_border(params: Params, generated) -> None:
    raw, _ = generated
    root = dataset_roots(raw)["dronevehicle"]
    b = params.soi_mini.ir.border_px
    size = params.soi_mini.dronevehicle.image_size
    raw_names: list[str] = []
    bndboxes = 0
    for split in params.soi_mini.dronevehicle.splits:
        for scene in _scenes(raw, "dronevehicle", split):
            stem = scene["stem"]
            tree = ET.parse(root / split / f"{split}labelr" / f"{stem}.xml").getroot()
            assert tree.tag == "annotation"
            filename = tree.findtext("filename")
            assert filename and filename.startswith("DJI_") and filename != stem
            sz = tree.find("size")
            assert sz is not None
            assert (_xml_int(sz, "width"), _xml_int(sz, "height"), _xml_int(sz, "depth")) == (
                size.width + 2 * b,
                size.height + 2 * b,
                3,
            )
            objs = tree.findall("object")
            assert len(objs) == len(scene["objects"])
            for el, obj in zip(objs, scene["objects"], strict=True):
                name = el.findtext("name")
                assert name is not None
                raw_names.append(name)
                assert normalize("dronevehicle", name) == obj["class"]
                expected = np.array(obj["polygon"]) + b
                poly_el, box_el = el.find("polygon"), el.find("bndbox")
                if obj["label_geometry"] == "polygon":
                    assert poly_el is not None and box_el is None
                    got = [_xml_int(poly_el, f"{c}{i}") for i in range(1, 5) for c in "xy"]
                    assert np.abs(np.array(got) - expected).max() <= 0.5 + 1e-9
                    assert signed_area(np.array(got, float).reshape(4, 2)) > 0
                else:
                    bndboxes += 1
                    assert box_el is not None and poly_el is None
                    got = [_xml_int(box_el, t) for t in ("xmin", "ymin", "xmax", "ymax")]
                    xs, ys = expected[0::2], expected[1::2]
                    hull = [xs.min(), ys.min(), xs.max(), ys.max()]
                    assert np.abs(np.array(got) - hull).max() <= 0.5 + 1e-9
            img = np.asarray(Image.open(raw / scene["image"]))
            assert img.shape == (size.height + 2 * b, size.width + 2 * b, 3)
            # the border is white; JPEG ringing may touch the 8x8 block next to the frame only
            inner = 8
            frame = np.ones(img.shape[:2], dtype=bool)
            frame[b - inner : -(b - inner), b - inner : -(b - inner)] = False
            assert img[frame].min() >= 250
            assert img[b:-b, b:-b].mean() < 250
    assert set(raw_names) <= {"car", "truck", "bus", "van", "freight car", "feright car",
                              "feright_car", "truvk"}  # fmt: skip
    assert {"feright car", "feright_car", "truvk"} & set(raw_names)
    assert bndboxes > 0


def test_scene_graph_records(params: Params, generated) -> None:
    raw, _ = generated
    sensor_keys = {
        "sardet": {"looks", "incidence_deg", "db_lo", "db_hi", "nesz_db"},
        "dota": {"sun_elevation_deg", "sun_azimuth_deg", "gsd_m"},
        "dronevehicle": {"night", "air_k", "ground_k"},
    }
    for ds in ("sardet", "dota", "dronevehicle"):
        for split in getattr(params.soi_mini, ds).splits:
            for scene in _scenes(raw, ds, split):
                assert (raw / scene["image"]).is_file()
                assert sensor_keys[ds] <= set(scene["sensor"])
                assert isinstance(scene["caption"], str) and len(scene["caption"]) > 10
                for o in scene["objects"]:
                    assert len(o["polygon"]) == 8 and len(o["center"]) == 2
                    assert {"class", "size_m", "angle_deg", "height_m", "material"} <= set(o)
                    if ds == "dronevehicle":
                        assert {"running", "t_target_k", "t_background_k", "contrast"} <= set(o)
                        assert o["contrast"] in (-1, 1)
                        assert abs(o["contrast_k"]) >= params.soi_mini.ir.min_contrast_k - 1e-6
                if ds == "dronevehicle" and any(o["running"] for o in scene["objects"]):
                    assert "running" in scene["caption"]


def test_real_importers_read_soi_mini(params: Params, generated) -> None:
    """The importers written for the real datasets read SOI-mini without a single drop."""
    raw, counts = generated
    for ds, root in dataset_roots(raw).items():
        drops: list = []
        rows = list(formats.get_reader(ds)(root, params.importers, None, drops.append))
        objects = [r for r in rows if r.object_index >= 0]
        assert not drops, drops[:3]
        assert len(objects) == sum(c["objects"] for c in counts[ds].values())
        assert {r.split for r in rows} == set(counts[ds])
