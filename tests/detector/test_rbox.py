"""Rotated-box conversions (polygon <-> le90 (cx, cy, w, h, θ)) on hand-made boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babelrs_core.detector.rbox import poly_to_rbox, rbox_to_poly, regularize
from babelrs_core.geometry import poly_from_hbox, poly_to_hbox, signed_area

# a 40 x 20 box centred at (50, 50), turned 30° clockwise on screen, listed as DOTA does:
# clockwise on screen from the head corner (hand-computed: cos 30° = 0.866025, sin 30° = 0.5)
HEAD_CW = [37.679492, 31.339746, 72.320508, 51.339746, 62.320508, 68.660254, 27.679492, 48.660254]
RBOX_30 = [50.0, 50.0, 40.0, 20.0, math.pi / 6]


def _same(a, b, atol=1e-3) -> None:
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=atol)


def test_axis_aligned_boxes_in_le90() -> None:
    # wide box: θ = 0; the manifest's polygon of a horizontal box is clockwise from top-left
    poly = poly_from_hbox(0, 0, 20, 10)
    assert poly == [0, 0, 20, 0, 20, 10, 0, 10]
    assert signed_area(poly) == 200.0  # > 0: clockwise on screen
    _same(poly_to_rbox([poly]), [[10, 5, 20, 10, 0]])
    # tall box: le90 keeps the long side as w, so θ = -π/2 (the range is [-π/2, π/2))
    _same(poly_to_rbox([poly_from_hbox(0, 0, 10, 20)]), [[5, 10, 20, 10, -math.pi / 2]])


def test_dota_clockwise_from_head_polygon() -> None:
    assert signed_area(HEAD_CW) > 0
    _same(poly_to_rbox([HEAD_CW]), [RBOX_30])
    # the head vertex and the direction do not change the box
    pts = np.array(HEAD_CW).reshape(4, 2)
    for shift in range(4):
        rolled = np.roll(pts, shift, axis=0)
        _same(poly_to_rbox([rolled.ravel()]), [RBOX_30])
        _same(poly_to_rbox([rolled[::-1].ravel()]), [RBOX_30])
    # and back: the same corners in the same order (clockwise from the (-w/2, -h/2) corner)
    _same(rbox_to_poly([RBOX_30]), [HEAD_CW])
    assert signed_area(rbox_to_poly([RBOX_30])[0]) == pytest.approx(800.0, rel=1e-5)


def test_le90_swaps_short_width_and_wraps_the_angle() -> None:
    # w < h at -60°: the same box is w=40, h=20 at +30°
    _same(regularize([[50, 50, 20, 40, -math.pi / 3]]), [RBOX_30])
    # θ = 100° (outside [-90°, 90°)) wraps to -80°
    _same(regularize([[0, 0, 30, 10, math.radians(100)]]), [[0, 0, 30, 10, math.radians(-80)]])


def test_round_trip_and_enclosing_box() -> None:
    rng = np.random.default_rng(0)
    boxes = np.stack(
        [
            rng.uniform(20, 200, 50),
            rng.uniform(20, 200, 50),
            rng.uniform(10, 60, 50),
            rng.uniform(2, 9, 50),  # h < w: no swap ambiguity
            rng.uniform(-math.pi / 2 + 1e-3, math.pi / 2 - 1e-3, 50),
        ],
        -1,
    ).astype(np.float32)
    polys = rbox_to_poly(boxes)
    assert all(signed_area(p) > 0 for p in polys)
    _same(poly_to_rbox(polys), boxes, atol=2e-3)
    _same(poly_to_hbox([HEAD_CW]), [[27.679492, 31.339746, 72.320508, 68.660254]])
    assert poly_to_rbox(np.zeros((0, 8))).shape == (0, 5)
    assert rbox_to_poly(np.zeros((0, 5))).shape == (0, 8)


def test_sparse_rotated_iou_equals_mmrotate() -> None:
    import torch
    from mmrotate.models.task_modules.assigners import RBboxOverlaps2D

    from babelrs_core.detector.iou import SparseRBboxOverlaps2D, enclosing_hboxes

    g = torch.Generator().manual_seed(0)

    def boxes(n: int) -> torch.Tensor:
        r = torch.rand(n, 5, generator=g)
        return r * torch.tensor([200.0, 200.0, 40.0, 20.0, 3.14]) + torch.tensor(
            [0.0, 0.0, 1.0, 1.0, -1.57]
        )

    a, b = boxes(400), boxes(30)
    b[0] = a[5]  # one exact match
    sparse, dense = SparseRBboxOverlaps2D(), RBboxOverlaps2D()
    for mode in ("iou", "iof"):
        got, ref = sparse(a, b, mode), dense(a, b, mode)
        assert got.shape == (400, 30) and (ref > 0).sum() > 10
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert sparse(a[:0], b).shape == (0, 30)
    # the enclosing box of the 40 x 20 box at 30°: half extents 20 cos + 10 sin, 20 sin + 10 cos
    hb = enclosing_hboxes(torch.tensor([[50.0, 50.0, 40.0, 20.0, math.pi / 6]]))[0]
    ex, ey = 20 * math.cos(math.pi / 6) + 5, 10 + 10 * math.cos(math.pi / 6)
    _same(hb.tolist(), [50 - ex, 50 - ey, 50 + ex, 50 + ey])
