"""Object geometry shared by every sensor: oriented boxes, footprints and their named parts.

An object is an oriented box: centre ``(cx, cy)`` in image pixels (x right, y down; pixel ``(i, j)``
covers ``[j, j+1) x [i, i+1)``), length ``L`` along its heading ``angle`` (degrees, 0 = +x,
90 = +y, i.e. clockwise on screen) and width ``W`` across it. Object-local coordinates are ``s``
(along the heading, front at ``+L/2``) and ``t`` (across, ``+`` = the object's right-hand side).

Each *kind* (car, ship, plane, ...) is a set of named parts defined in those local coordinates;
the footprint is their union and touches all four sides of the box, so the box is tight. SAR, IR
and RGB renderers colour the same parts differently, and the labels come from the same box, so
geometry cannot drift between sensors and labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from babelrs_core.geometry import signed_area

Parts = dict[str, np.ndarray]

#: Vehicle kinds (top view: rounded rectangle with glass bands).
VEHICLE_KINDS = ("car", "van", "truck", "freight", "bus")
#: Kinds whose box keeps a fixed "upright" heading (round things: the head vertex is top-left).
ROUND_KINDS = ("tank", "roundabout")


@dataclass(frozen=True)
class Window:
    """Pixel window around an object with the local coordinates of every pixel centre."""

    y0: int
    y1: int
    x0: int
    x1: int
    s: np.ndarray  # along-heading coordinate (px) of each pixel centre
    t: np.ndarray  # across-heading coordinate (px), + = right-hand side

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def axes(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``u`` (heading) and ``v`` (right-hand side) in image coordinates."""
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])


def obb_polygon(cx: float, cy: float, length: float, width: float, angle_deg: float) -> np.ndarray:
    """The box's 4 vertices, shape (4, 2): front-left first, then clockwise on screen.

    Front-left is the "head" vertex of DOTA's convention. In image coordinates (y down) the order
    has a positive shoelace area.
    """
    u, v = axes(angle_deg)
    c = np.array([cx, cy])
    hl, hw = length / 2.0, width / 2.0
    return np.stack(
        [c + hl * u - hw * v, c + hl * u + hw * v, c - hl * u + hw * v, c - hl * u - hw * v]
    )


def make_window(
    cx: float,
    cy: float,
    length: float,
    width: float,
    angle_deg: float,
    shape: tuple[int, int],
    pad: int = 0,
) -> Window | None:
    """The clipped pixel window holding the box (grown by ``pad`` px); ``None`` if off-image."""
    poly = obb_polygon(cx, cy, length, width, angle_deg)
    h, w = shape
    x0 = max(math.floor(poly[:, 0].min()) - pad, 0)
    x1 = min(math.ceil(poly[:, 0].max()) + pad + 1, w)
    y0 = max(math.floor(poly[:, 1].min()) - pad, 0)
    y1 = min(math.ceil(poly[:, 1].max()) + pad + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    # pixel-centre offsets as a row and a column; broadcasting makes the (rows, cols) grids
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    u, v = axes(angle_deg)
    return Window(y0, y1, x0, x1, dx * u[0] + dy * u[1], dx * v[0] + dy * v[1])


def box_mask(win: Window, length: float, width: float) -> np.ndarray:
    """Pixels of ``win`` whose centre lies inside the oriented box."""
    return (np.abs(win.s) <= length / 2.0) & (np.abs(win.t) <= width / 2.0)


def convex_polygon_mask(poly: np.ndarray | list[float], shape: tuple[int, int]) -> np.ndarray:
    """Full-image mask of pixel centres inside a convex polygon (any vertex order)."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    sign = 1.0 if signed_area(p) >= 0 else -1.0
    inside = np.ones(shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, axis=0), strict=True):
        cross = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        inside &= sign * cross >= -1e-9
    return inside


# ----------------------------------------------------------------------------------------------
# Part definitions. Each takes local coordinates (s, t) in px and the box length / width in px
# (``ln``, ``wd``).
# Fractions are proportions of real objects (seen from above), documented per kind.


def _rounded_rect(s: np.ndarray, t: np.ndarray, ln: float, wd: float, r: float) -> np.ndarray:
    dx = np.maximum(np.abs(s) - (ln / 2.0 - r), 0.0)
    dy = np.maximum(np.abs(t) - (wd / 2.0 - r), 0.0)
    return (np.abs(s) <= ln / 2.0) & (np.abs(t) <= wd / 2.0) & (dx * dx + dy * dy <= r * r)


def _car(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Car / van: windshield and rear glass are dark bands 25-35 % from each end
    # (docs/soi_mini.md §6.3).
    body = _rounded_rect(s, t, ln, wd, 0.25 * wd)
    a = s / (ln / 2.0)
    glass_t = np.abs(t) <= 0.42 * wd
    front = body & (a > 0.5)
    windshield = body & (a > 0.3) & (a <= 0.5) & glass_t
    rear_glass = body & (a < -0.3) & (a >= -0.5) & glass_t
    trunk = body & (a < -0.5)
    roof = body & ~front & ~windshield & ~rear_glass & ~trunk
    return {
        "hood": front,
        "windshield": windshield,
        "roof": roof,
        "rear_glass": rear_glass,
        "trunk": trunk,
    }


def _truck(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Truck / freight car: cab (front ~22 % of the length), a short gap, then the cargo box.
    body = _rounded_rect(s, t, ln, wd, 0.1 * wd)
    a = s / (ln / 2.0)
    cab = body & (a > 0.56)
    cab_glass = cab & (a > 0.9) & (np.abs(t) <= 0.42 * wd)
    cargo = body & (a < 0.52)
    return {"cab": cab & ~cab_glass, "cab_glass": cab_glass, "cargo": cargo}


def _bus(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Bus: long roof with a regular pattern of roof units; windshield at the front, engine at the
    # rear (rear-engined city bus).
    body = _rounded_rect(s, t, ln, wd, 0.12 * wd)
    a = s / (ln / 2.0)
    windshield = body & (a > 0.93)
    engine = body & (a < -0.85)
    pitch = ln / 6.0
    units = (
        body
        & (np.abs(t) <= 0.25 * wd)
        & (np.abs(np.mod(s + ln / 2.0, pitch) - pitch / 2) < 0.18 * pitch)
    )
    units &= ~windshield & ~engine
    roof = body & ~windshield & ~engine & ~units
    return {"roof": roof, "roof_units": units, "windshield": windshield, "engine": engine}


def _ship(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Ship: pointed bow over the front 35 %, flat stern, superstructure block aft of midship.
    a = s / (ln / 2.0)
    b = t / (wd / 2.0)
    half = np.where(a > 0.3, (1.0 - a) / 0.7, 1.0)
    hull = (np.abs(a) <= 1.0) & (np.abs(b) <= half)
    superstructure = hull & (a > -0.75) & (a < -0.35) & (np.abs(b) <= 0.6)
    return {"deck": hull & ~superstructure, "superstructure": superstructure}


def _plane(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Airliner seen from above: ln = fuselage length, wd = wing span. Fuselage width ~0.1 ln, swept
    # (~25°) tapered wings rooted at ~40 % from the nose, tailplane spanning ~1/3 of the wings.
    hw_f = 0.05 * ln
    nose = np.where(
        s > 0.4 * ln, np.sqrt(np.clip(1.0 - ((s - 0.4 * ln) / (0.1 * ln)) ** 2, 0, 1)), 1.0
    )
    fuselage = (np.abs(s) <= ln / 2.0) & (np.abs(t) <= hw_f * nose)
    sweep = math.tan(math.radians(25.0))

    def wing(root_le: float, root_c: float, tip_c: float, half_span: float) -> np.ndarray:
        at = np.abs(t)
        le = root_le - sweep * at
        chord = root_c + (tip_c - root_c) * at / half_span
        return (at <= half_span) & (s <= le) & (s >= le - chord)

    wings = wing(0.12 * ln, 0.2 * ln, 0.07 * ln, wd / 2.0) & ~fuselage
    tail = wing(-0.33 * ln, 0.1 * ln, 0.04 * ln, wd / 6.0) & ~fuselage
    eng_t = np.abs(np.abs(t) - 0.32 * wd / 2.0)
    engines = (eng_t <= 0.03 * ln) & (s <= 0.1 * ln) & (s >= -0.02 * ln)
    wings &= ~engines
    return {"fuselage": fuselage, "wings": wings, "tail": tail, "engines": engines}


def _helicopter(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Helicopter: wd = rotor diameter, ln = rotor + tail boom; two blades drawn along the axes.
    hub = ln / 2.0 - wd / 2.0
    body = ((s - hub) / (0.28 * wd)) ** 2 + (t / (0.14 * wd)) ** 2 <= 1.0
    boom = (s >= -ln / 2.0) & (s <= hub) & (np.abs(t) <= 0.035 * wd)
    tail_rotor = (s >= -ln / 2.0) & (s <= -ln / 2.0 + 0.06 * wd) & (np.abs(t) <= 0.12 * wd)
    blades = ((np.abs(s - hub) <= wd / 2.0) & (np.abs(t) <= 0.025 * wd)) | (
        (np.abs(t) <= wd / 2.0) & (np.abs(s - hub) <= 0.025 * wd)
    )
    rotor = blades & ~body
    return {"body": body, "tail": (boom | tail_rotor) & ~body & ~rotor, "rotor": rotor}


def _tank(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Storage tank: circular roof inside a rim (~6 % of the radius).
    r = np.hypot(s, t) / (ln / 2.0)
    return {"roof": r <= 0.94, "rim": (r > 0.94) & (r <= 1.0)}


def _harbor(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Harbor: a quay along the shore (rear 18 %) with straight piers reaching into the water
    # (the front); the outer piers sit on the box's sides so the box is tight.
    a = s / (ln / 2.0)
    b = t / (wd / 2.0)
    inside = (np.abs(a) <= 1.0) & (np.abs(b) <= 1.0)
    quay = inside & (a < -0.64)
    n = 2 + int(wd > 0.8 * ln)
    half = min(0.18, 0.6 / n)
    centres = np.linspace(-1.0 + half, 1.0 - half, n)
    piers = inside & np.any(np.abs(b[..., None] - centres) <= half, axis=-1) & ~quay
    return {"quay": quay, "piers": piers}


def _bridge(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Bridge: deck along the heading with parapets on both edges (~10 % of the width each).
    deck = (np.abs(s) <= ln / 2.0) & (np.abs(t) <= wd / 2.0)
    rails = deck & (np.abs(t) > 0.4 * wd)
    return {"deck": deck & ~rails, "rails": rails}


def _court(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Tennis / basketball court: surface with boundary and centre lines (~1.5 % of the length).
    area = (np.abs(s) <= ln / 2.0) & (np.abs(t) <= wd / 2.0)
    lw = max(0.015 * ln, 0.6)
    lines = area & (
        (np.abs(s) >= ln / 2.0 - 3 * lw)
        | (np.abs(t) >= wd / 2.0 - 3 * lw)
        | (np.abs(s) <= lw / 2.0 + 0.5)
    )
    return {"surface": area & ~lines, "lines": lines}


def _soccer(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    area = (np.abs(s) <= ln / 2.0) & (np.abs(t) <= wd / 2.0)
    lw = max(0.01 * ln, 0.6)
    r = np.hypot(s, t)
    lines = area & (
        (np.abs(s) >= ln / 2.0 - 2 * lw)
        | (np.abs(t) >= wd / 2.0 - 2 * lw)
        | (np.abs(s) <= lw)
        | (np.abs(r - 0.13 * wd) <= lw)
    )
    return {"grass": area & ~lines, "lines": lines}


def _track(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Ground track field: stadium (rectangle with semicircular ends); a running-track band around
    # a grass infield.
    r = wd / 2.0
    straight = max(ln / 2.0 - r, 0.0)
    d = np.hypot(np.maximum(np.abs(s) - straight, 0.0), t)
    stadium = d <= r
    infield = d <= 0.8 * r
    return {"track": stadium & ~infield, "infield": infield}


def _diamond(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    # Baseball diamond: a 90° fan with its apex (home plate) at the rear-centre of the box.
    # Box: length R, width 2 R sin45°; dirt infield near the apex.
    sa = s + ln / 2.0
    r = np.hypot(sa, t)
    fan = (r <= ln) & (np.abs(t) <= sa + 1e-9) & (sa >= 0)
    infield = fan & (r <= 0.42 * ln)
    return {"outfield": fan & ~infield, "infield": infield}


def _pool(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    area = (np.abs(s) <= ln / 2.0) & (np.abs(t) <= wd / 2.0)
    rim = max(0.08 * min(ln, wd), 0.6)
    water = area & (np.abs(s) <= ln / 2.0 - rim) & (np.abs(t) <= wd / 2.0 - rim)
    return {"water": water, "rim": area & ~water}


def _roundabout(s: np.ndarray, t: np.ndarray, ln: float, wd: float) -> Parts:
    r = np.hypot(s, t) / (ln / 2.0)
    return {"ring": (r > 0.55) & (r <= 1.0), "island": r <= 0.55}


PART_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, float, float], Parts]] = {
    "car": _car,
    "van": _car,
    "truck": _truck,
    "freight": _truck,
    "bus": _bus,
    "ship": _ship,
    "plane": _plane,
    "helicopter": _helicopter,
    "tank": _tank,
    "harbor": _harbor,
    "bridge": _bridge,
    "tennis-court": _court,
    "basketball-court": _court,
    "soccer-ball-field": _soccer,
    "ground-track-field": _track,
    "baseball-diamond": _diamond,
    "swimming-pool": _pool,
    "roundabout": _roundabout,
}


def parts(kind: str, win: Window, length: float, width: float) -> Parts:
    """Named part masks of an object of ``kind`` over ``win`` (sizes in px)."""
    try:
        fn = PART_FUNCTIONS[kind]
    except KeyError:
        raise ValueError(
            f"no shape renderer for object kind {kind!r}; supported: {', '.join(PART_FUNCTIONS)}"
        ) from None
    return fn(win.s, win.t, length, width)


def union(p: Parts) -> np.ndarray:
    """The footprint: union of all parts."""
    masks = list(p.values())
    out = masks[0].copy()
    for m in masks[1:]:
        out |= m
    return out


def sweep(
    mask: np.ndarray, y0: int, x0: int, dx: float, dy: float, shape: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """Union of ``mask`` translated by ``k/n * (dx, dy)`` for ``k = 0..n`` (a cast shadow).

    ``mask`` sits at ``(y0, x0)`` in an image of ``shape``; returns the swept mask and its own
    origin, clipped to the image.
    """
    h, w = shape
    n = max(math.ceil(max(abs(dx), abs(dy))), 1)
    mh, mw = mask.shape
    ox0 = x0 + min(0, math.floor(dx))
    oy0 = y0 + min(0, math.floor(dy))
    ox1 = x0 + mw + max(0, math.ceil(dx))
    oy1 = y0 + mh + max(0, math.ceil(dy))
    out = np.zeros((oy1 - oy0, ox1 - ox0), dtype=bool)
    for k in range(n + 1):
        sx = x0 - ox0 + round(k * dx / n)
        sy = y0 - oy0 + round(k * dy / n)
        out[sy : sy + mh, sx : sx + mw] |= mask
    cy0, cx0 = max(oy0, 0), max(ox0, 0)
    cy1, cx1 = min(oy1, h), min(ox1, w)
    return out[cy0 - oy0 : cy1 - oy0, cx0 - ox0 : cx1 - ox0], cy0, cx0
