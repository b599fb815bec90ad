"""Polygon and box maths in image pixels (y down), the one home of these helpers.

* polygon: ``x1 y1 .. xk yk`` (the manifest and DOTA use 4 corners, 8 values; a ``(k, 2)`` array
  of vertices works too). Clockwise on screen means a positive signed area here.
* hbox: horizontal box ``(x1, y1, x2, y2)``.

Rotated boxes (mmrotate's ``le90``) live in :mod:`babelrs_core.detector.rbox`, which needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _shoelace(polys: np.ndarray) -> np.ndarray:
    """Twice the signed area of each row of ``(N, 2k)`` polygons."""
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    return (xs * np.roll(ys, -1, axis=1) - np.roll(xs, -1, axis=1) * ys).sum(axis=1)


def signed_area(poly: np.ndarray | Sequence[float]) -> float:
    """Shoelace area of one polygon (flat values or ``(k, 2)`` vertices): > 0 when clockwise on
    screen (y down)."""
    return float(_shoelace(np.asarray(poly, dtype=np.float64).reshape(1, -1))[0]) / 2


def poly_area(poly: np.ndarray | Sequence[float]) -> float:
    """Unsigned shoelace area of one polygon."""
    return abs(signed_area(poly))


def poly_areas(polys: np.ndarray) -> np.ndarray:
    """Unsigned shoelace areas of ``(N, 2k)`` polygons (vectorised; NaN / inf stay so)."""
    return np.abs(_shoelace(np.asarray(polys, dtype=np.float64))) / 2


def hbox_from_poly(poly: Sequence[float]) -> tuple[float, float, float, float]:
    """Axis-aligned box (x1, y1, x2, y2) enclosing one flat polygon, as Python floats."""
    xs, ys = poly[0::2], poly[1::2]
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def poly_to_hbox(polys: np.ndarray | Sequence) -> np.ndarray:
    """``(N, 8)`` polygons -> ``(N, 4)`` enclosing horizontal boxes ``x1 y1 x2 y2`` (float32)."""
    p = np.asarray(polys, dtype=np.float32).reshape(-1, 8)
    xs, ys = p[:, 0::2], p[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], -1)


def poly_from_hbox(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """Clockwise (in image coordinates, y down) polygon from top-left for a horizontal box."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]
