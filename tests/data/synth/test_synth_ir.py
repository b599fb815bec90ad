"""IR: every vehicle's recorded contrast sign holds on the written DroneVehicle JPEG.

Measured like the generator defines it: mean pixel inside the labelled box vs the ring just around
it (:func:`babelrs_core.data.synth.ir.contrast_ring`, other boxes grown by 1 px excluded), on the
8-bit image after blur, NETD, fixed-pattern noise, AGC and JPEG, with the border cropped.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from scipy import ndimage

from babelrs_core.config import Params
from babelrs_core.data.layout import scenes_file
from babelrs_core.data.synth.ir import AIR_K, contrast_ring
from babelrs_core.data.synth.shapes import convex_polygon_mask


def test_contrast_sign_survives_the_sensor(params: Params, generated) -> None:
    raw, _ = generated
    b = params.soi_mini.ir.border_px
    checked = 0
    seen_signs = set()
    for split in params.soi_mini.dronevehicle.splits:
        for line in scenes_file(raw, "dronevehicle", split).read_text().splitlines():
            scene = json.loads(line)
            img = np.asarray(Image.open(raw / scene["image"]))[b:-b, b:-b, 0].astype(float)
            shape = img.shape
            boxes = [convex_polygon_mask(o["polygon"], shape) for o in scene["objects"]]
            for i, o in enumerate(scene["objects"]):
                others = np.zeros(shape, dtype=bool)
                for j, m in enumerate(boxes):
                    if j != i:
                        others |= m
                ring = contrast_ring(boxes[i], ndimage.binary_dilation(others))
                delta = img[boxes[i]].mean() - img[ring].mean()
                assert np.sign(delta) == o["contrast"], (scene["stem"], i, o["kind"], delta)
                # sizeable: several grey levels, not a rounding accident
                assert abs(delta) >= 3, (scene["stem"], i, delta)
                checked += 1
                seen_signs.add(o["contrast"])
    assert checked >= 15
    assert seen_signs == {-1, 1}  # warmer and colder targets both occur


def test_night_and_running_are_recorded(params: Params, generated) -> None:
    raw, _ = generated
    nights, running = set(), set()
    for split in params.soi_mini.dronevehicle.splits:
        for line in scenes_file(raw, "dronevehicle", split).read_text().splitlines():
            scene = json.loads(line)
            sensor = scene["sensor"]
            night = sensor["night"]
            nights.add(night)
            # the recorded flag agrees with what the generator drew for that time of day
            lo, hi = AIR_K["night" if night else "day"]
            assert lo <= sensor["air_k"] <= hi, (scene["stem"], night, sensor["air_k"])
            assert (sensor["sun_elevation_deg"] is None) == night, (scene["stem"], sensor)
            assert ("at night" in scene["caption"]) == night, (scene["stem"], scene["caption"])
            for o in scene["objects"]:
                running.add(o["running"])
                assert o["t_body_k"] > 200 and o["t_background_k"] > 200
                if o["running"]:
                    assert o["t_engine_k"] > o["t_body_k"]
    assert nights == {True, False}  # night_fraction 0.4: both occur in the tiny set
    assert running == {True, False}
