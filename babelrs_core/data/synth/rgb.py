"""Optical aerial sensor model (docs/soi_mini.md §6.3): textured ground, objects, sun shadows,
optics.

Ground colour per land cover with multi-octave fBm (crop rows on fields, roof blocks in built-up
areas, calm water), road and parking-lot markings; objects painted part by part (vehicles with
dark glass bands, ships with a V wake when moving, cross-shaped planes, storage tanks with a rim
highlight and a crescent shadow inside, piers, courts, ...); shadows offset by ``h / tan(e)``
opposite the sun azimuth (darkened and slightly blue); then blur, colour / brightness jitter,
haze and a JPEG round trip (the image is stored as PNG, like DOTA, but carries JPEG artefacts as
Google-Earth sources do).
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from babelrs_core.config import RgbSensor
from babelrs_core.data.synth import shapes
from babelrs_core.data.synth.cover import ASPHALT, COVER_NAMES, FIELD, SOIL, URBAN, WATER
from babelrs_core.data.synth.scene import Render, Scene, footprints, shadow_of
from babelrs_core.data.synth.textures import blocks, fbm, stripes

RGB = tuple[float, float, float]

#: Ground colours (sRGB, 0-1) and texture strength (relative fBm amplitude) per land cover.
COVER_RGB: dict[int, RGB] = {
    FIELD: (0.30, 0.40, 0.18), SOIL: (0.50, 0.42, 0.32), URBAN: (0.55, 0.55, 0.53),
    ASPHALT: (0.32, 0.32, 0.33), WATER: (0.10, 0.17, 0.20),
}  # fmt: skip
COVER_TEXTURE: dict[int, float] = {FIELD: 0.12, SOIL: 0.10, URBAN: 0.08, ASPHALT: 0.05, WATER: 0.03}
COVER_JITTER = 0.12  # per-image relative change of each cover's colour
CROP_ROW_M = (1.5, 3.0)  # crop-row spacing on fields
CROP_ROW_AMP = 0.06
ROOF_BLOCK_M = (8.0, 20.0)  # roof size in built-up areas
ROOF_BRIGHTNESS = (0.6, 1.35)
MARK_RGB: RGB = (0.85, 0.85, 0.82)  # road paint
MARK_WIDTH_M = 0.15
DASH_M = (3.0, 9.0)  # dash length, dash period
STALL_M = 2.5  # parking stall width
#: Vehicle colours: a rough global fleet prior (docs/soi_mini.md §6.3), ~20 % saturated.
FLEET: tuple[tuple[RGB | None, float], ...] = (
    ((0.90, 0.90, 0.90), 0.30), ((0.08, 0.08, 0.09), 0.20), ((0.45, 0.45, 0.46), 0.15),
    ((0.70, 0.71, 0.72), 0.15), ((0.65, 0.10, 0.10), 0.07), ((0.12, 0.20, 0.55), 0.07),
    (None, 0.06),  # any other saturated colour
)  # fmt: skip
GLASS_RGB: RGB = (0.08, 0.09, 0.11)
ROOF_LIGHTER = 1.08
#: Fixed part colours (or choices) of the other kinds.
PALETTE: dict[str, dict[str, tuple[RGB, ...]]] = {
    "ship": {"deck": ((0.30, 0.30, 0.32), (0.55, 0.20, 0.15), (0.15, 0.25, 0.45),
                      (0.85, 0.85, 0.85)),
             "superstructure": ((0.92, 0.92, 0.90),)},
    "plane": {"fuselage": ((0.90, 0.90, 0.92), (0.80, 0.81, 0.83)), "wings": ((0.78, 0.79, 0.80),),
              "tail": ((0.85, 0.85, 0.87), (0.20, 0.30, 0.60), (0.70, 0.15, 0.15)),
              "engines": ((0.40, 0.40, 0.42),)},
    "helicopter": {"body": ((0.25, 0.30, 0.20), (0.85, 0.85, 0.85), (0.60, 0.10, 0.10)),
                   "tail": ((0.30, 0.30, 0.30),), "rotor": ((0.12, 0.12, 0.12),)},
    "tank": {"roof": ((0.72, 0.72, 0.70), (0.82, 0.82, 0.80)), "rim": ((0.95, 0.95, 0.93),)},
    "harbor": {"quay": ((0.58, 0.57, 0.55),), "piers": ((0.66, 0.65, 0.62),)},
    "bridge": {"deck": ((0.45, 0.45, 0.46), (0.55, 0.54, 0.52)), "rails": ((0.75, 0.75, 0.73),)},
    "tennis-court": {"surface": ((0.25, 0.50, 0.35), (0.20, 0.35, 0.60), (0.70, 0.40, 0.25)),
                     "lines": ((0.95, 0.95, 0.95),)},
    "basketball-court": {"surface": ((0.75, 0.50, 0.30), (0.20, 0.35, 0.60)),
                         "lines": ((0.95, 0.95, 0.95),)},
    "soccer-ball-field": {"grass": ((0.20, 0.50, 0.20),), "lines": ((0.95, 0.95, 0.95),)},
    "ground-track-field": {"track": ((0.65, 0.30, 0.25),), "infield": ((0.20, 0.50, 0.20),)},
    "baseball-diamond": {"outfield": ((0.25, 0.50, 0.22),), "infield": ((0.65, 0.45, 0.30),)},
    "swimming-pool": {"water": ((0.20, 0.60, 0.80),), "rim": ((0.85, 0.85, 0.83),)},
    "roundabout": {"ring": ((0.33, 0.33, 0.34),), "island": ((0.25, 0.45, 0.20),)},
}  # fmt: skip
MOVING_SHIP = 0.6  # share of ships under way (with a wake)
KELVIN_HALF_ANGLE_DEG = 19.47  # half-angle of a ship's Kelvin wake
WAKE_LENGTHS = 2.0  # wake drawn out to this many ship lengths behind the stern
SHADOW_FACTOR = (0.4, 0.6)  # shadows darken by this factor (docs/soi_mini.md §6.3) ...
SHADOW_BLUE = 0.05  # ... and keep a little more blue (sky light)
TANK_RECESS = 0.3  # a floating roof sits this share of the tank height below the rim
GAIN_JITTER = 0.08  # per-channel colour gain 1 +- this
BRIGHTNESS_JITTER = 0.1
HAZE_RGB: RGB = (0.75, 0.76, 0.78)
VEHICLE_PART_BODY = ("hood", "trunk", "cab", "cargo", "engine")


@dataclass
class RgbSettings:
    """Optical acquisition drawn for one image (recorded in the scene graph)."""

    gsd_m: float
    sun_elevation_deg: float
    sun_azimuth_deg: float
    blur_sigma_px: float
    haze: float
    jpeg_quality: int
    gains: tuple[float, float, float]
    brightness: float
    shadow_factor: float
    cover_rgb: dict[str, RGB]
    difficult_min_px: float
    difficult_shadowed_fraction: float
    objects: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # asdict() without copying the per-object states first (only to drop them)
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name != "objects"
        }


def object_attrs(o: Any, shaded: float, settings: RgbSettings) -> dict[str, Any]:
    """An object's recorded attributes: its drawn ones, the share of it in other objects'
    shadows, and DOTA's ``difficult`` flag (too small, or shadowed beyond the params' share)."""
    size = math.sqrt(o.length_px * o.width_px)
    difficult = size < settings.difficult_min_px or shaded >= settings.difficult_shadowed_fraction
    return {**settings.objects[o.index], "shadowed_fraction": shaded, "difficult": int(difficult)}


def _fleet(rng: np.random.Generator) -> RGB:
    p = np.array([w for _, w in FLEET])
    colour = FLEET[int(rng.choice(len(FLEET), p=p / p.sum()))][0]
    if colour is None:
        hue = rng.random(3)
        r, g, b = (float(v) for v in 0.15 + 0.7 * hue / hue.max())
        colour = (r, g, b)
    return colour


def _object_colours(rng: np.random.Generator, kind: str) -> dict[str, RGB]:
    if kind in shapes.VEHICLE_KINDS:
        body = _fleet(rng)
        roof = (
            min(body[0] * ROOF_LIGHTER, 1.0),
            min(body[1] * ROOF_LIGHTER, 1.0),
            min(body[2] * ROOF_LIGHTER, 1.0),
        )
        cargo = _fleet(rng)
        return {
            "hood": body,
            "trunk": body,
            "roof": roof,
            "cab": body,
            "cargo": cargo,
            "engine": roof,
            "roof_units": (0.55, 0.55, 0.56),
            "windshield": GLASS_RGB,
            "rear_glass": GLASS_RGB,
            "cab_glass": GLASS_RGB,
        }
    out = {}
    for part, choices in PALETTE[kind].items():
        out[part] = choices[int(rng.integers(len(choices)))]
    return out


def draw_rgb_settings(rng: np.random.Generator, sensor: RgbSensor, scene: Scene) -> RgbSettings:
    """Draw sun, optics, colour jitter and object colours for one image."""
    u = lambda r: float(rng.uniform(r.lo, r.hi))  # noqa: E731
    cover = {}
    for c in sorted(COVER_RGB):
        f = 1.0 + rng.uniform(-COVER_JITTER, COVER_JITTER, size=3)
        cover[COVER_NAMES[c]] = tuple(float(v) for v in np.clip(np.array(COVER_RGB[c]) * f, 0, 1))
    settings = RgbSettings(
        gsd_m=scene.gsd_m,
        sun_elevation_deg=u(sensor.sun_elevation_deg),
        sun_azimuth_deg=float(rng.uniform(0.0, 360.0)),
        blur_sigma_px=u(sensor.blur_sigma_px),
        haze=u(sensor.haze),
        jpeg_quality=round(u(sensor.jpeg_quality)),
        gains=tuple(float(g) for g in 1.0 + rng.uniform(-GAIN_JITTER, GAIN_JITTER, size=3)),  # type: ignore[arg-type]
        brightness=float(1.0 + rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER)),
        shadow_factor=float(rng.uniform(*SHADOW_FACTOR)),
        cover_rgb=cover,  # type: ignore[arg-type]
        difficult_min_px=sensor.difficult_min_px,
        difficult_shadowed_fraction=sensor.difficult_shadowed_fraction,
    )
    for o in scene.objects:
        state: dict[str, Any] = {"colours": _object_colours(rng, o.kind)}
        if o.kind == "ship":
            state["moving"] = bool(rng.random() < MOVING_SHIP)
        settings.objects.append(state)
    return settings


def ground_rgb(scene: Scene, settings: RgbSettings, rng: np.random.Generator) -> np.ndarray:
    shape = scene.shape
    img = np.zeros((*shape, 3))
    lum = fbm(rng, shape, beta=2.2, min_wavelength_px=2.0)
    chroma = fbm(rng, shape, beta=3.0, min_wavelength_px=8.0)
    rows = stripes(
        shape, float(rng.uniform(0, math.pi)), float(rng.uniform(*CROP_ROW_M)) / scene.gsd_m
    )
    roofs = blocks(rng, shape, float(rng.uniform(*ROOF_BLOCK_M)) / scene.gsd_m)
    roofs = ROOF_BRIGHTNESS[0] + (ROOF_BRIGHTNESS[1] - ROOF_BRIGHTNESS[0]) * roofs
    for c, amp in COVER_TEXTURE.items():
        m = scene.cover == c
        if not m.any():
            continue
        base = np.array(settings.cover_rgb[COVER_NAMES[c]])
        factor = 1.0 + amp * lum[m]
        if c == FIELD:
            factor = factor + CROP_ROW_AMP * rows[m]
        if c == URBAN:
            factor = factor * roofs[m]
        px = base[None, :] * factor[:, None]
        px[:, 1] *= 1.0 + 0.5 * amp * chroma[m]
        img[m] = px
    _markings(scene, img)
    return img


def _markings(scene: Scene, img: np.ndarray) -> None:
    """Dashed centre line and edge lines on the road, stall lines on the parking lot."""
    h, w = scene.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    half_line = max(MARK_WIDTH_M / scene.gsd_m, 0.5) / 2.0
    asphalt = scene.cover == ASPHALT
    paint = np.zeros(scene.shape)
    road = scene.layout.get("road")
    if road:
        psi = math.radians(road["angle_deg"])
        across = -(xx - w / 2) * math.sin(psi) + (yy - h / 2) * math.cos(psi) - road["offset_px"]
        along = (xx - w / 2) * math.cos(psi) + (yy - h / 2) * math.sin(psi)
        dash = np.mod(along * scene.gsd_m, DASH_M[1]) < DASH_M[0]
        centre = np.clip(half_line + 0.5 - np.abs(across), 0, 1) * dash
        edge_at = road["width_px"] / 2.0 - 2 * half_line - 1.0
        edges = np.clip(half_line + 0.5 - np.abs(np.abs(across) - edge_at), 0, 1)
        paint = np.maximum(paint, np.maximum(centre, edges))
    lot = scene.layout.get("lot")
    if lot:
        a = math.radians(lot["angle_deg"])
        s = (xx - lot["cx"]) * math.cos(a) + (yy - lot["cy"]) * math.sin(a)
        t = -(xx - lot["cx"]) * math.sin(a) + (yy - lot["cy"]) * math.cos(a)
        inside = (np.abs(s) <= lot["length_px"] / 2) & (np.abs(t) <= lot["width_px"] / 2)
        stall = STALL_M / scene.gsd_m
        d = np.abs(np.mod(s + stall / 2, stall) - stall / 2)
        paint = np.maximum(paint, np.clip(half_line + 0.5 - d, 0, 1) * inside)
    paint *= asphalt
    img[:] = img * (1 - paint[..., None]) + np.array(MARK_RGB) * paint[..., None]


def _wake(img: np.ndarray, scene: Scene, o: Any, free: np.ndarray) -> None:
    """White V (Kelvin) wake and turbulent centre wake behind a moving ship."""
    lp, wp = o.length_px, o.width_px
    u, _v = shapes.axes(o.angle_deg)
    back = WAKE_LENGTHS * lp
    cx, cy = o.cx - u[0] * back / 2, o.cy - u[1] * back / 2
    spread = math.tan(math.radians(KELVIN_HALF_ANGLE_DEG))
    win = shapes.make_window(cx, cy, lp + back, 2 * spread * back + wp, o.angle_deg, scene.shape)
    if win is None:
        return
    behind = -(win.s - back / 2 + lp / 2)  # distance behind the stern
    t = np.abs(win.t)
    arm_w = max(0.06 * wp, 0.6)
    arms = (np.abs(t - spread * behind) <= arm_w) * 0.35 * np.exp(-behind / (1.5 * lp))
    centre = (t <= wp / 2 * (1 + behind / (4 * lp))) * 0.6 * np.exp(-behind / lp)
    alpha = np.where(behind > 0, np.maximum(arms, centre), 0.0) * free[win.slices]
    region = img[win.slices]
    region[:] = region * (1 - alpha[..., None]) + 0.9 * alpha[..., None]


def render_rgb(scene: Scene, settings: RgbSettings, rng: np.random.Generator) -> Render:
    """Render the scene as an 8-bit RGB aerial image."""
    shape = scene.shape
    img = ground_rgb(scene, settings, rng)
    layers, geo = footprints(scene)
    shadows, shadow = paint_objects(img, scene, settings, layers, geo)

    attrs = []
    for o in scene.objects:
        own = layers == o.index
        by_others = np.zeros(shape, dtype=bool)
        for j, sh in enumerate(shadows):
            if j != o.index:
                by_others |= sh
        shaded = float((own & by_others).sum() / max(own.sum(), 1))
        attrs.append(object_attrs(o, shaded, settings))

    img = ndimage.gaussian_filter(img, (settings.blur_sigma_px, settings.blur_sigma_px, 0))
    img = img * np.array(settings.gains) * settings.brightness
    img = img * (1 - settings.haze) + np.array(HAZE_RGB) * settings.haze
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="JPEG", quality=settings.jpeg_quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB")).copy()
    return Render(out, layers, shadow, settings.to_json(), attrs)


def paint_objects(
    img: np.ndarray,
    scene: Scene,
    settings: RgbSettings,
    layers: np.ndarray,
    geo: list[tuple[shapes.Window, shapes.Parts]],
) -> tuple[list[np.ndarray], np.ndarray]:
    """Paint the objects, ship wakes and sun shadows onto the ground ``img`` (in place); return
    each object's shadow (full-image masks) and their union."""
    shape = scene.shape
    free_water = (scene.cover == WATER) & (layers < 0)
    for o in scene.objects:
        if settings.objects[o.index].get("moving"):
            _wake(img, scene, o, free_water)
    for o, (win, p) in zip(scene.objects, geo, strict=True):
        colours = settings.objects[o.index]["colours"]
        region = img[win.slices]
        for name, m in p.items():
            region[m] = colours[name]

    # Sun shadows: offset h / tan(e) opposite the sun azimuth (clockwise from north = up).
    az, el = math.radians(settings.sun_azimuth_deg), math.radians(settings.sun_elevation_deg)
    away = np.array([-math.sin(az), math.cos(az)])
    shadows = []
    for o, (win, _p) in zip(scene.objects, geo, strict=True):
        length = o.height_m / math.tan(el) / scene.gsd_m
        fp = layers[win.slices] == o.index
        shadows.append(shadow_of(scene, o, win, fp, away[0] * length, away[1] * length))
    shadow = np.zeros(shape, dtype=bool)
    for sh in shadows:
        shadow |= sh
    dark = np.array([settings.shadow_factor] * 2 + [settings.shadow_factor + SHADOW_BLUE])
    img[shadow] *= dark
    _tank_crescents(img, scene, geo, settings, away, dark)
    return shadows, shadow


def _tank_crescents(
    img: np.ndarray,
    scene: Scene,
    geo: list,
    settings: RgbSettings,
    away: np.ndarray,
    dark: np.ndarray,
) -> None:
    """The rim's shadow on a storage tank's recessed floating roof (a crescent on the sun side)."""
    el = math.radians(settings.sun_elevation_deg)
    for o, (win, p) in zip(scene.objects, geo, strict=True):
        if o.kind != "tank":
            continue
        u, v = shapes.axes(o.angle_deg)
        sun = -away
        ds, dt = float(sun @ u), float(sun @ v)
        reach = TANK_RECESS * o.height_m / math.tan(el) / scene.gsd_m
        radius = 0.94 * o.length_px / 2.0
        hidden = np.hypot(win.s + reach * ds, win.t + reach * dt) > radius
        m = p["roof"] & hidden
        img[win.slices][m] *= dark
