"""Thermal (LWIR 8-14 um, white-hot) sensor model (docs/soi_mini.md §6.2).

Temperature map per land cover (day / night tables) with weak fBm, vehicles parked (ambient
+-3 K) or running (engine +10-30 K), day-time shadows; apparent radiance
``eps * sigma T^4 + (1 - eps) * sigma T_sky^4`` (expressed as a brightness temperature); optics
blur; NETD noise; fixed-pattern column noise; AGC percentile stretch to 8 bit.

Every object gets an *intended contrast*: the sign of (mean apparent temperature inside its box
minus the mean over a ring just around it, other objects excluded), measured through the optics
(after blur, before noise). If it is smaller than ``min_contrast_k`` -- or if less than half of it
is left once the AGC range clips hot engines and cold bare metal -- the vehicle's temperature is
pushed away from the background (a parked car that has cooled or warmed a bit more), so the
recorded sign survives the sensor model, 8-bit output included.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from babelrs_core.config import IrSensor
from babelrs_core.data.synth import shapes
from babelrs_core.data.synth.cover import ASPHALT, COVER_NAMES, FIELD, SOIL, URBAN, WATER
from babelrs_core.data.synth.scene import Render, Scene, footprints, shadow_of
from babelrs_core.data.synth.textures import fbm

#: Air temperature, K (temperate climate, day vs night).
AIR_K = {"day": (290.0, 305.0), "night": (275.0, 290.0)}
#: Day: absolute ground temperature, K. Night: offset from the air temperature, K. Sun-heated
#: asphalt 305-330 K, concrete 300-320 K, vegetation 293-303 K, water ~ air; at night asphalt and
#: concrete stay 2-6 K above air (thermal inertia), grass drops 2-5 K below (docs/soi_mini.md §6.2).
GROUND_DAY_K: dict[int, tuple[float, float]] = {
    ASPHALT: (305.0, 330.0), URBAN: (300.0, 320.0), FIELD: (293.0, 303.0), SOIL: (298.0, 315.0),
}  # fmt: skip
GROUND_NIGHT_DK: dict[int, tuple[float, float]] = {
    ASPHALT: (2.0, 6.0), URBAN: (2.0, 6.0), FIELD: (-5.0, -2.0), SOIL: (-1.0, 2.0),
    WATER: (0.0, 3.0),
}  # fmt: skip
#: Emissivity 8-14 um (camera-manual tables, docs/soi_mini.md §6.2).
COVER_EPS: dict[int, float] = {ASPHALT: 0.93, URBAN: 0.94, FIELD: 0.975, SOIL: 0.94, WATER: 0.96}
MATERIAL_EPS: dict[str, float] = {
    "painted metal": 0.92, "painted steel": 0.92, "painted aluminium": 0.9, "glass": 0.92,
    "bare metal": 0.12, "rubber": 0.95, "concrete": 0.94, "asphalt": 0.93, "acrylic": 0.93,
    "grass": 0.975, "water": 0.96,
}  # fmt: skip
PARKED_DK = (-3.0, 3.0)  # parked body vs air
ENGINE_DK = (10.0, 30.0)  # running: hood / engine above the body
BIG_ROOF_DAY_DK = (5.0, 15.0)  # bus and truck roofs heated by the sun
TEXTURE_K = (0.5, 2.0)  # fBm amplitude of the ground temperature (IR is low-texture)
TEXTURE_WAVELENGTH_PX = 12.0
SHADOW_DK = (3.0, 10.0)  # day-time shadows are this much cooler
SUN_ELEVATION_DEG = (25.0, 65.0)
#: Ring that defines an object's "surrounding background": pixels more than RING_PX[0] and at
#: most RING_PX[1] px (Euclidean) outside its box, other objects' boxes (grown by 1 px) excluded.
RING_PX = (1.0, 4.0)
CONTRAST_ROUNDS = 6  # adjustment passes (adjacent objects influence each other's rings)
DISPLAY_SHARE = 0.5  # share of min_contrast_k still required after AGC clipping
#: Parts that are engine / hot when running, per kind.
HOT_PARTS: dict[str, tuple[str, ...]] = {
    "car": ("hood",), "van": ("hood",), "truck": ("cab",), "freight": ("cab",), "bus": ("engine",),
}  # fmt: skip
GLASS_PARTS = ("windshield", "rear_glass", "cab_glass")
BIG_ROOFS = ("roof", "roof_units", "cargo")


@dataclass
class IrSettings:
    """Thermal acquisition drawn for one image (recorded in the scene graph)."""

    night: bool
    air_k: float
    sky_k: float
    blur_sigma_px: float
    netd_k: float
    fixed_pattern: float
    texture_k: float
    shadow_dk: float
    sun_elevation_deg: float | None
    sun_azimuth_deg: float | None
    ground_k: dict[str, float]
    agc_percentiles: tuple[float, float]
    min_contrast_k: float
    objects: list[dict[str, Any]] = field(default_factory=list)  # per-object thermal state
    agc_lo_k: float | None = None  # filled by render_ir
    agc_hi_k: float | None = None

    def to_json(self) -> dict[str, Any]:
        # asdict() without copying the per-object states first (only to drop them)
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name != "objects"
        }


def draw_ir_settings(
    rng: np.random.Generator, sensor: IrSensor, scene: Scene, night: bool | None = None
) -> IrSettings:
    """Draw day/night (unless ``night`` is given), temperatures and each vehicle's running state
    for one image."""
    u = lambda r: float(rng.uniform(r.lo, r.hi))  # noqa: E731
    if night is None:
        night = bool(rng.random() < sensor.night_fraction)
    air = float(rng.uniform(*AIR_K["night" if night else "day"]))
    ground = {}
    for c in sorted(COVER_EPS):
        if night:
            ground[COVER_NAMES[c]] = air + float(rng.uniform(*GROUND_NIGHT_DK[c]))
        else:
            ground[COVER_NAMES[c]] = air if c == WATER else float(rng.uniform(*GROUND_DAY_K[c]))
    settings = IrSettings(
        night=night,
        air_k=air,
        sky_k=u(sensor.sky_k),
        blur_sigma_px=u(sensor.blur_sigma_px),
        netd_k=u(sensor.netd_k),
        fixed_pattern=u(sensor.fixed_pattern),
        texture_k=float(rng.uniform(*TEXTURE_K)),
        shadow_dk=float(rng.uniform(*SHADOW_DK)),
        sun_elevation_deg=None if night else float(rng.uniform(*SUN_ELEVATION_DEG)),
        sun_azimuth_deg=None if night else float(rng.uniform(0.0, 360.0)),
        ground_k=ground,
        agc_percentiles=(sensor.agc_percentiles.lo, sensor.agc_percentiles.hi),
        min_contrast_k=sensor.min_contrast_k,
    )
    for o in scene.objects:
        running = bool(rng.random() < sensor.running_fraction) and o.kind in HOT_PARTS
        body = air + float(rng.uniform(*PARKED_DK))
        state = {"running": running, "t_body_k": body}
        if running:
            state["t_engine_k"] = body + float(rng.uniform(*ENGINE_DK))
        if not night and o.kind in ("bus", "truck", "freight"):
            state["t_roof_k"] = body + float(rng.uniform(*BIG_ROOF_DAY_DK))
        settings.objects.append(state)
    return settings


def part_state(
    kind: str, part: str, state: dict[str, Any], material: str, cargo: str | None
) -> tuple[float, float]:
    """Temperature (K) and emissivity of one part of an object."""
    t = state["t_body_k"]
    eps = MATERIAL_EPS.get(material, MATERIAL_EPS["painted metal"])
    if part in GLASS_PARTS:
        eps = MATERIAL_EPS["glass"]
    elif state.get("running") and part in HOT_PARTS.get(kind, ()):
        t = state["t_engine_k"]
    elif part in BIG_ROOFS and "t_roof_k" in state:
        t = state["t_roof_k"]
    if part == "cargo" and cargo == "bare metal":
        eps = MATERIAL_EPS["bare metal"]
    return t, eps


def apparent_k(t: np.ndarray, eps: np.ndarray, sky_k: float) -> np.ndarray:
    """Brightness temperature of ``eps * B(T) + (1 - eps) * B(T_sky)``, with ``B ~ T^4``."""
    return (eps * t**4 + (1.0 - eps) * sky_k**4) ** 0.25


def contrast_ring(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The ring just around ``box`` (a full-image mask) that stands for its background."""
    dist = ndimage.distance_transform_edt(~box)
    return (dist > RING_PX[0]) & (dist <= RING_PX[1]) & ~others


def blur_k(app: np.ndarray, sigma: float) -> np.ndarray:
    """Optics blur applies to radiance (~T^4), not to temperature."""
    return ndimage.gaussian_filter(app**4, sigma, mode="nearest") ** 0.25


def ground_k(
    scene: Scene, settings: IrSettings, rng: np.random.Generator, texture: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Temperature (K, with weak texture) and emissivity of the land cover, no objects."""
    shape = scene.shape
    temp = np.zeros(shape)
    eps = np.zeros(shape)
    for c, e in COVER_EPS.items():
        m = scene.cover == c
        temp[m] = settings.ground_k[COVER_NAMES[c]]
        eps[m] = e
    if texture:
        temp += settings.texture_k * fbm(
            rng, shape, beta=3.0, min_wavelength_px=TEXTURE_WAVELENGTH_PX
        )
    return temp, eps


def render_ir(
    scene: Scene, settings: IrSettings, rng: np.random.Generator, texture: bool = True
) -> Render:
    """Render the scene as an 8-bit (white-hot) thermal image of the *unpadded* frame."""
    shape = scene.shape
    temp, eps = ground_k(scene, settings, rng, texture)

    layers, geo = footprints(scene)
    shadow = np.zeros(shape, dtype=bool)
    if settings.sun_elevation_deg is not None:
        az = math.radians(settings.sun_azimuth_deg or 0.0)
        for o, (win, _p) in zip(scene.objects, geo, strict=True):
            length = o.height_m / math.tan(math.radians(settings.sun_elevation_deg)) / scene.gsd_m
            fp = layers[win.slices] == o.index
            shadow |= shadow_of(scene, o, win, fp, -math.sin(az) * length, math.cos(az) * length)
        shadow &= layers < 0
        temp[shadow] -= settings.shadow_dk

    boxes = []
    for o, (win, p) in zip(scene.objects, geo, strict=True):
        state = settings.objects[o.index]
        for name, m in p.items():
            t, e = part_state(o.kind, name, state, o.material, o.attrs.get("cargo"))
            temp[win.slices][m] = t
            eps[win.slices][m] = e
        box = np.zeros(shape, dtype=bool)
        box[win.slices] = shapes.box_mask(win, o.length_px, o.width_px)
        boxes.append(box)

    attrs = _enforce_contrast(scene, settings, temp, eps, geo, boxes)
    app = apparent_k(temp, eps, settings.sky_k)
    seen = blur_k(app, settings.blur_sigma_px)
    seen = seen + rng.normal(0.0, settings.netd_k, size=shape)
    span = float(np.subtract(*np.percentile(seen, [99, 1])))
    seen = seen + rng.normal(0.0, settings.fixed_pattern * span, size=(1, shape[1]))
    lo, hi = (round(float(v), 3) for v in np.percentile(seen, settings.agc_percentiles))
    hi = max(hi, lo + 1e-3)
    settings.agc_lo_k, settings.agc_hi_k = lo, hi
    image = np.round(np.clip((seen - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    return Render(image, layers, shadow, settings.to_json(), attrs)


def _enforce_contrast(
    scene: Scene,
    settings: IrSettings,
    temp: np.ndarray,
    eps: np.ndarray,
    geo: list[tuple[shapes.Window, shapes.Parts]],
    boxes: list[np.ndarray],
) -> list[dict[str, Any]]:
    """Give every object a contrast of at least ``min_contrast_k`` through the optics."""
    shape = scene.shape
    rings = []
    for i in range(len(boxes)):
        others = np.zeros(shape, dtype=bool)
        for j, b in enumerate(boxes):
            if j != i:
                others |= b
        rings.append(contrast_ring(boxes[i], ndimage.binary_dilation(others)))
    need = settings.min_contrast_k

    def measure() -> list[tuple[float, float, float] | None]:
        """Per object: (mean inside, mean of ring, display-domain contrast in K)."""
        seen = blur_k(apparent_k(temp, eps, settings.sky_k), settings.blur_sigma_px)
        lo, hi = np.percentile(seen, settings.agc_percentiles)
        shown = np.clip(seen, lo, hi)  # what AGC can show: hotter / colder saturates
        out: list[tuple[float, float, float] | None] = []
        for b, r in zip(boxes, rings, strict=True):
            if not r.any():
                out.append(None)
                continue
            out.append(
                (
                    float(seen[b].mean()),
                    float(seen[r].mean()),
                    float(shown[b].mean() - shown[r].mean()),
                )
            )
        return out

    signs = [0] * len(boxes)
    for _ in range(CONTRAST_ROUNDS):
        done = True
        for o, (win, p), m in zip(scene.objects, geo, measure(), strict=True):
            if m is None:
                continue
            state = settings.objects[o.index]
            delta = m[0] - m[1]
            if not signs[o.index]:  # the sign the scene physically has; near zero: by state
                near_zero = abs(delta) < 0.5
                signs[o.index] = (
                    (1 if state["running"] else -1) if near_zero else int(np.sign(delta))
                )
            sign = signs[o.index]
            # Both the physical contrast and the one left after AGC saturation must reach it
            # (a hot engine or a bare-metal cargo box can saturate and flip the displayed sign).
            shortfall = max(need - sign * delta, need * DISPLAY_SHARE - sign * m[2])
            if shortfall <= 0:
                continue
            done = False
            # Shift every emissive part; the box also holds a little background and the blur
            # spreads the change, so overshoot the shortfall by half.
            shift = sign * shortfall * 1.5
            emissive = np.zeros(win.s.shape, dtype=bool)
            for part in p.values():
                emissive |= part
            emissive &= eps[win.slices] > 0.5
            temp[win.slices][emissive] += shift
            for key in ("t_body_k", "t_engine_k", "t_roof_k"):
                if key in state:
                    state[key] += shift
        if done:
            break
    result: list[dict[str, Any]] = []
    for o, m in zip(scene.objects, measure(), strict=True):
        state = dict(settings.objects[o.index])
        if m is None:  # enclosed by other boxes: no background to compare with
            result.append({**state, "contrast": None})
            continue
        delta = m[0] - m[1]
        result.append(
            {
                **state,
                "t_target_k": m[0],
                "t_background_k": m[1],
                "contrast": 1 if delta > 0 else -1,
                "contrast_k": delta,
            }
        )
    return result
