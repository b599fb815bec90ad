"""Polygon areas and enclosing boxes (rotated boxes: tests/detector/test_rbox.py)."""

from __future__ import annotations

import numpy as np

from babelrs_core.geometry import (
    hbox_from_poly,
    poly_area,
    poly_areas,
    poly_from_hbox,
    poly_to_hbox,
    signed_area,
)


def test_areas_signed_unsigned_and_vectorised() -> None:
    cw = poly_from_hbox(0, 0, 20, 10)  # clockwise on screen (y down)
    ccw = cw[:2] + cw[6:] + cw[4:6] + cw[2:4]
    assert signed_area(cw) == 200.0 and signed_area(ccw) == -200.0
    assert signed_area(np.reshape(cw, (4, 2))) == 200.0
    assert poly_area(ccw) == 200.0
    assert poly_area([0, 0, 10, 0, 10, 0, 0, 0]) == 0.0
    with np.errstate(invalid="ignore"):  # inf * 0
        areas = poly_areas(np.array([cw, ccw, [0, 0, np.inf, 0, 1, 1, 0, 1]], float))
    assert areas[:2].tolist() == [200.0, 200.0] and not np.isfinite(areas[2])


def test_enclosing_boxes() -> None:
    poly = [3.0, 1.0, 7.0, 2.0, 6.0, 9.0, 2.0, 8.0]
    assert hbox_from_poly(poly) == (2.0, 1.0, 7.0, 9.0)
    boxes = poly_to_hbox([poly, poly_from_hbox(1, 2, 3, 4)])
    assert boxes.dtype == np.float32 and boxes.tolist() == [[2, 1, 7, 9], [1, 2, 3, 4]]
