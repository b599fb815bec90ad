"""Geometry of SOI-mini objects for all three sensors: each rendered footprint lies inside its
label box (+-1 px), the box is tight, boxes are inside the image and never overlap, and the
head vertex / clockwise order hold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from babelrs_core.concepts import DATASETS
from babelrs_core.config import Params
from babelrs_core.data.synth import shapes
from babelrs_core.data.synth.generate import render_image
from babelrs_core.data.synth.scene import SceneObject
from babelrs_core.geometry import signed_area


def _oriented_iou(obj: SceneObject, fp: np.ndarray) -> float:
    """IoU of the footprint's extent in the box frame (pixel centres +- 0.5) with the box."""
    ys, xs = np.nonzero(fp)
    u, v = shapes.axes(obj.angle_deg)
    dx, dy = xs + 0.5 - obj.cx, ys + 0.5 - obj.cy
    s, t = dx * u[0] + dy * u[1], dx * v[0] + dy * v[1]
    hl, hw = obj.length_px / 2, obj.width_px / 2
    fs0, fs1 = max(s.min() - 0.5, -hl), min(s.max() + 0.5, hl)
    ft0, ft1 = max(t.min() - 0.5, -hw), min(t.max() + 0.5, hw)
    inter = max(fs1 - fs0, 0) * max(ft1 - ft0, 0)
    outer = (s.max() - s.min() + 1) * (t.max() - t.min() + 1)
    return inter / (4 * hl * hw + outer - inter)


def _check_scene(scene, render) -> int:
    h, w = scene.shape
    polys = [shapes.convex_polygon_mask(o.polygon().ravel(), scene.shape) for o in scene.objects]
    for i, o in enumerate(scene.objects):
        poly = o.polygon()
        assert signed_area(poly) > 0
        assert (poly >= 0).all() and (poly[:, 0] <= w).all() and (poly[:, 1] <= h).all()
        fp = render.layers == o.index
        assert fp.any(), (scene.stem, o.kind)
        grown = ndimage.binary_dilation(polys[i])  # +-1 px (pixel-centre sampling)
        assert not (fp & ~grown).any(), (scene.stem, o.kind, int((fp & ~grown).sum()))
        if scene.dataset != "dota":  # RGB shadows may fall on other objects (difficult rule)
            assert not (fp & render.shadow).any()
        iou = _oriented_iou(o, fp)
        small = min(o.length_px, o.width_px) < 8
        assert iou >= (0.5 if small else 0.8), (scene.stem, o.kind, o.length_px, o.width_px, iou)
        x, y, bw, bh = o.attrs["hbox"]  # the horizontal box (SARDet's label) hugs the footprint
        ys, xs = np.nonzero(fp)
        assert (x, y, bw, bh) == (
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        )
        for j in range(i):
            assert not (polys[i] & polys[j]).any(), (scene.stem, i, j)
    return len(scene.objects)


@pytest.mark.parametrize("dataset", ["sardet", "dota", "dronevehicle"])
def test_footprints_inside_tight_boxes(params: Params, dataset: str) -> None:
    spec = getattr(params.soi_mini, dataset)
    n = 0
    for split, count in spec.splits.items():
        for i in range(count):
            n += _check_scene(*render_image(params, dataset, split, i))
    assert n >= 8


@pytest.mark.parametrize("cls", DATASETS["dota"].class_names)
def test_every_dota_class_renders(params: Params, make_params, cls: str) -> None:
    """All 15 DOTA classes have a shape renderer (courts, fields, pool, roundabout, bridge, ...)
    and are placed in a 256-px scene of their own."""
    dota = {
        **params.soi_mini.dota.model_dump(),
        "classes": [cls],
        "splits": {"train": 2},
        "image_size": {"width": 256, "height": 256},
        "objects_per_image": {"lo": 1, "hi": 2},
    }
    p = make_params(dota=dota)
    placed = 0
    for i in range(2):
        scene, render = render_image(p, "dota", "train", i)
        _check_scene(scene, render)
        assert render.image.shape == (256, 256, 3) and render.image.dtype == np.uint8
        placed += len(scene.objects)
        # the object is visible: its footprint differs from the ring around it
        for o in scene.objects:
            fp = render.layers == o.index
            ring = ndimage.binary_dilation(fp, iterations=3) & ~ndimage.binary_dilation(fp)
            assert np.abs(render.image[fp].mean(0) - render.image[ring].mean(0)).max() > 3
    assert placed >= 1


def test_unknown_kind_is_a_clear_error() -> None:
    win = shapes.make_window(10, 10, 6, 3, 0, (20, 20))
    assert win is not None
    with pytest.raises(
        ValueError, match=r"no shape renderer for object kind 'blimp'.*tennis-court"
    ):
        shapes.parts("blimp", win, 6, 3)


def test_head_vertex_is_front_left() -> None:
    # heading +x (right): front-left is the top-right corner on screen, then clockwise
    poly = shapes.obb_polygon(50, 50, 20, 10, 0.0)
    assert poly.tolist() == [[60, 45], [60, 55], [40, 55], [40, 45]]
    # heading up (-90°): front-left is the top-left corner
    poly = shapes.obb_polygon(50, 50, 20, 10, -90.0)
    assert np.allclose(poly[0], [45, 40])
    assert signed_area(poly) > 0
