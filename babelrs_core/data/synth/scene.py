"""Scene graphs for SOI-mini: land cover, objects placed without overlap, and captions.

One :class:`Scene` per image. :func:`sample_scene` draws it from a per-image random generator:
a land-cover map (field / soil / urban / asphalt / water, from smooth fBm plus optional sea or
river, road and parking lot), then objects by rejection sampling so that each one lies fully
inside the image, on a plausible cover (ships on water, cars on roads, ...) and apart from the
others. Sizes are real-world metres (table below) turned into pixels with the sensor's GSD.
Sensor renderers (:mod:`.sar`, :mod:`.ir`, :mod:`.rgb`) and label writers read the same graph.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from babelrs_core.concepts import class_info
from babelrs_core.config import DatasetSpec, SceneLayout
from babelrs_core.data.synth import shapes
from babelrs_core.data.synth.cover import ASPHALT, COVER_NAMES, FIELD, SOIL, URBAN, WATER
from babelrs_core.data.synth.textures import fbm
from babelrs_core.english import number_word, with_article

#: Dataset class -> the shape kinds it may be drawn as (one is picked uniformly per object).
CLASS_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "sardet": {"ship": ("ship",), "aircraft": ("plane",), "car": ("car",), "tank": ("tank",),
               "bridge": ("bridge",), "harbor": ("harbor",)},
    "dota": {"small-vehicle": ("car", "van"), "large-vehicle": ("truck", "bus"),
             "plane": ("plane",), "ship": ("ship",), "storage-tank": ("tank",),
             "harbor": ("harbor",), "bridge": ("bridge",), "helicopter": ("helicopter",),
             "tennis-court": ("tennis-court",), "basketball-court": ("basketball-court",),
             "soccer-ball-field": ("soccer-ball-field",),
             "ground-track-field": ("ground-track-field",),
             "baseball-diamond": ("baseball-diamond",), "swimming-pool": ("swimming-pool",),
             "roundabout": ("roundabout",)},
    "dronevehicle": {"car": ("car",), "van": ("van",), "truck": ("truck",),
                     "freight car": ("freight",), "bus": ("bus",)},
}  # fmt: skip


@dataclass(frozen=True)
class Size:
    """Real-world size ranges of a kind: length (m), width and height (m or x length)."""

    length_m: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    width_ratio: bool = False
    height_ratio: bool = False


#: Approximate real sizes seen from above (docs/soi_mini.md §6.3 for vehicles; public specs
#: otherwise: airliner span ~ length, ship L/W 5-8, doubles tennis court with run-off
#: 36.6 x 18.3 m, FIFA pitch 100-110 x 64-75 m, 400-m track ~176 x 92 m, baseball fence at
#: 90-125 m).
SIZES: dict[str, Size] = {
    "car": Size((4.2, 4.9), (1.7, 1.9), (1.4, 1.6)),
    "van": Size((5.0, 5.5), (1.95, 2.05), (1.9, 2.5)),
    "truck": Size((7.0, 12.0), (2.4, 2.6), (3.0, 4.0)),
    "freight": Size((7.0, 12.0), (2.4, 2.6), (3.0, 4.0)),
    "bus": Size((10.0, 13.0), (2.5, 2.55), (3.0, 3.4)),
    "ship": Size((12.0, 150.0), (1 / 8, 1 / 5), (0.1, 0.2), width_ratio=True, height_ratio=True),
    "plane": Size((12.0, 70.0), (0.85, 1.15), (0.2, 0.3), width_ratio=True, height_ratio=True),
    "helicopter": Size((12.0, 19.0), (1 / 1.25, 1 / 1.15), (3.0, 4.5), width_ratio=True),
    "tank": Size((10.0, 60.0), (1.0, 1.0), (8.0, 20.0), width_ratio=True),
    "harbor": Size((15.0, 80.0), (0.5, 1.2), (1.0, 3.0), width_ratio=True),
    "bridge": Size((0.0, 0.0), (6.0, 20.0), (5.0, 15.0)),  # length follows the river
    "tennis-court": Size((34.7, 36.6), (17.1, 18.3), (0.0, 0.0)),
    "basketball-court": Size((28.0, 32.0), (15.0, 19.0), (0.0, 0.0)),
    "soccer-ball-field": Size((100.0, 110.0), (64.0, 75.0), (0.0, 0.0)),
    "ground-track-field": Size((170.0, 180.0), (90.0, 96.0), (0.0, 0.0)),
    "baseball-diamond": Size((90.0, 125.0), (math.sqrt(2), math.sqrt(2)), (0.0, 0.0), True),
    "swimming-pool": Size((8.0, 50.0), (0.4, 0.6), (0.0, 0.0), width_ratio=True),
    "roundabout": Size((25.0, 60.0), (1.0, 1.0), (0.0, 0.0), width_ratio=True),
}

#: Surface material of each kind (IR emissivity and SAR/RGB brightness look these up).
MATERIALS: dict[str, str] = {
    "car": "painted metal", "van": "painted metal", "truck": "painted metal",
    "freight": "painted metal", "bus": "painted metal", "ship": "painted steel",
    "plane": "painted aluminium", "helicopter": "painted metal", "tank": "painted steel",
    "harbor": "concrete", "bridge": "concrete", "tennis-court": "acrylic",
    "basketball-court": "acrylic", "soccer-ball-field": "grass", "ground-track-field": "rubber",
    "baseball-diamond": "grass", "swimming-pool": "water", "roundabout": "asphalt",
}  # fmt: skip

#: Share of freight cars whose cargo box is bare metal (cold in LWIR: it mirrors the sky).
BARE_METAL_FREIGHT = 0.5

#: Where each kind may be placed. ``road``/``lot``: on asphalt, aligned with the road / lot;
#: ``land``: any dry cover; ``ground``: dry cover other than asphalt; ``water``; ``shore``: a
#: harbor's quay on land with its piers in the water; ``river``: a bridge across the river.
PLACEMENT: dict[str, tuple[tuple[str, float], ...]] = {
    **{k: (("road", 0.5), ("lot", 0.3), ("land", 0.2)) for k in shapes.VEHICLE_KINDS},
    "plane": (("lot", 0.6), ("land", 0.4)),
    "helicopter": (("lot", 0.6), ("land", 0.4)),
    "ship": (("water", 1.0),),
    "harbor": (("shore", 1.0),),
    "bridge": (("river", 1.0),),
    # sports grounds and roundabouts prefer open ground but may cut across a road or a lot
    **{k: (("ground", 0.7), ("land", 0.3)) for k in ("tennis-court", "basketball-court",
       "soccer-ball-field", "ground-track-field", "baseball-diamond", "roundabout")},
}  # fmt: skip
#: Kinds that live on or over water.
WATER_KINDS = ("ship", "harbor", "bridge")
#: Kinds placed before the others (they need a particular spot: a river crossing, a shoreline).
PLACE_FIRST = ("bridge", "harbor")
ALLOWED_COVERS: dict[str, frozenset[int]] = {
    "road": frozenset({ASPHALT}),
    "lot": frozenset({ASPHALT}),
    "land": frozenset({FIELD, SOIL, URBAN, ASPHALT}),
    "ground": frozenset({FIELD, SOIL, URBAN}),
    "water": frozenset({WATER}),
}

#: Geometry of the layout, as fractions of the image's shorter side (scene design choices).
_FIT = 0.6  # the box diagonal is at most this share of the shorter side (objects must fit)
_SEA_SHORE = (-0.35, 0.15)  # offset of a sea's shoreline from the image centre ...
_SEA_SHORE_MIXED = (0.0, 0.3)  # ... when objects also need dry land (at most half is sea)
_RIVER_WIDTH = (0.25, 0.5)  # river width
_SHORE_WOBBLE = 0.04  # amplitude of the shoreline's meander
_ROAD_OFFSET = 0.3  # road centre line at most this far from the image centre
_ROAD_WIDTH_M = (6.0, 15.0)  # docs/soi_mini.md §6.3
_LOT_SIZE = (0.3, 0.6)  # parking lot / apron sides
_SOIL_SHARE = (0.0, 0.4)  # share of dry land that is bare soil
_URBAN_SHARE = (0.0, 0.3)  # share of dry land that is built up
_MARGIN_PX = 1.0  # boxes stay this far inside the image (so blur never reaches the edge)
_BRIDGE_APPROACH_M = (5.0, 15.0)  # deck length on land at each end of a bridge
_BRIDGE_SKEW_DEG = 10.0  # std of a bridge's deviation from crossing at right angles
_ROAD_JITTER_DEG = 2.0  # std of a vehicle's heading about its road / parking row


@dataclass
class SceneObject:
    """One object of the scene graph; sizes in metres and pixels, angles in degrees."""

    index: int
    cls: str  # canonical class of the dataset
    kind: str  # shape kind (shapes.PART_FUNCTIONS)
    cx: float
    cy: float
    length_m: float
    width_m: float
    height_m: float
    angle_deg: float  # heading of the front, image coords (0 = +x, 90 = +y)
    gsd_m: float
    material: str
    placement: str  # road / lot / land / ground / water / shore / river
    on: str  # land cover under most of the footprint
    attrs: dict[str, Any] = field(default_factory=dict)  # sensor-specific state and label quirks

    @property
    def length_px(self) -> float:
        return self.length_m / self.gsd_m

    @property
    def width_px(self) -> float:
        return self.width_m / self.gsd_m

    def polygon(self) -> np.ndarray:
        """Oriented box (4, 2): head (front-left) vertex first, clockwise on screen."""
        return shapes.obb_polygon(self.cx, self.cy, self.length_px, self.width_px, self.angle_deg)

    def window(self, shape: tuple[int, int], pad: int = 0) -> shapes.Window | None:
        return shapes.make_window(
            self.cx, self.cy, self.length_px, self.width_px, self.angle_deg, shape, pad
        )

    def parts(self, win: shapes.Window) -> shapes.Parts:
        return shapes.parts(self.kind, win, self.length_px, self.width_px)

    def to_json(self) -> dict[str, Any]:
        poly = self.polygon()
        return {
            "index": self.index,
            "class": self.cls,
            "kind": self.kind,
            "polygon": [_r(v, 2) for v in poly.ravel()],
            "center": [_r(self.cx, 2), _r(self.cy, 2)],
            "size_m": [_r(self.length_m, 3), _r(self.width_m, 3)],
            "size_px": [_r(self.length_px, 2), _r(self.width_px, 2)],
            "angle_deg": _r(self.angle_deg, 2),
            "height_m": _r(self.height_m, 3),
            "material": self.material,
            "placement": self.placement,
            "on": self.on,
            **{k: _jsonable(v) for k, v in sorted(self.attrs.items())},
        }


@dataclass
class Scene:
    """One image's scene graph (``cover`` is not serialised; it is re-drawn from the seed)."""

    dataset: str
    split: str
    index: int
    stem: str
    image_file: str  # relative to the raw data root, posix
    width: int
    height: int
    gsd_m: float
    cover: np.ndarray
    layout: dict[str, Any]
    objects: list[SceneObject]
    sensor: dict[str, Any] = field(default_factory=dict)
    caption: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def to_json(self) -> dict[str, Any]:
        counts = np.bincount(self.cover.ravel(), minlength=len(COVER_NAMES)) / self.cover.size
        return {
            "stem": self.stem,
            "image": self.image_file,
            "dataset": self.dataset,
            "split": self.split,
            "index": self.index,
            "width": self.width,
            "height": self.height,
            "gsd_m": self.gsd_m,
            "land_cover": {
                "fractions": {n: _r(float(c), 4) for n, c in zip(COVER_NAMES, counts, strict=True)},
                **{k: _jsonable(v) for k, v in self.layout.items()},
            },
            "sensor": _jsonable(self.sensor),
            "objects": [o.to_json() for o in self.objects],
            "caption": self.caption,
        }


@dataclass
class Render:
    """What a sensor renderer returns: the image plus layers that tests and labels use."""

    image: np.ndarray  # uint8, (H, W) for SAR / IR, (H, W, 3) for RGB
    layers: np.ndarray  # int16 (H, W): index of the object whose footprint holds the pixel, -1 none
    shadow: np.ndarray  # bool (H, W): shadows cast by objects
    sensor: dict[str, Any]  # settings actually used (drawn and derived, e.g. the dB range)
    object_attrs: list[dict[str, Any]]  # per object: sensor-derived state for the scene graph
    disturbed: np.ndarray | None = None  # bool (H, W): pixels that objects influence at all


def footprints(scene: Scene) -> tuple[np.ndarray, list[tuple[shapes.Window, shapes.Parts]]]:
    """Object-index layer map of the scene and each object's window and part masks."""
    layers = np.full(scene.shape, -1, dtype=np.int16)
    out = []
    for o in scene.objects:
        win = o.window(scene.shape)
        if win is None:  # cannot happen for sampled objects (they lie inside the image)
            raise ValueError(f"object {o.index} of {scene.stem} lies outside the image")
        p = o.parts(win)
        layers[win.slices][shapes.union(p)] = o.index
        out.append((win, p))
    return layers, out


def shadow_of(
    scene: Scene, obj: SceneObject, win: shapes.Window, fp: np.ndarray, dx: float, dy: float
) -> np.ndarray:
    """Full-image mask of the shadow ``obj`` casts along ``(dx, dy)`` px (footprint excluded).

    A bridge deck rests on its banks, so its shadow falls on the water only.
    """
    out = np.zeros(scene.shape, dtype=bool)
    if dx == 0 and dy == 0:
        return out
    swept, y0, x0 = shapes.sweep(fp, win.y0, win.x0, dx, dy, scene.shape)
    out[y0 : y0 + swept.shape[0], x0 : x0 + swept.shape[1]] = swept
    out[win.slices] &= ~fp
    if obj.kind == "bridge":
        out &= scene.cover == WATER
    return out


def _r(x: float, nd: int) -> float:
    return round(float(x), nd)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return round(v, 4)
    return v


def empty_scene(dataset: str, width: int, height: int, gsd_m: float, cover: int = FIELD) -> Scene:
    """An object-free scene of one uniform land cover (for sensor-statistics checks)."""
    grid = np.full((height, width), cover, dtype=np.uint8)
    return Scene(dataset, "test", 0, "flat", "", width, height, gsd_m, grid, {}, [])


# ----------------------------------------------------------------------------------------------
# Layout


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


@dataclass(frozen=True)
class LayoutNeeds:
    """What a land-cover map holds besides dry land (drawn from the object kinds)."""

    river: bool  # a river (a bridge spans it)
    water: bool  # a river or a sea
    dry: bool  # some objects need dry land: a sea covers at most about half
    road: bool
    lot: bool  # a parking lot / apron


def draw_needs(rng: np.random.Generator, kinds: list[str], cfg: SceneLayout) -> LayoutNeeds:
    """What the object ``kinds`` need, and by chance water, a road or a lot besides."""
    vehicles = any(k in shapes.VEHICLE_KINDS for k in kinds)
    aircraft = any(k in ("plane", "helicopter") for k in kinds)
    want_river = "bridge" in kinds
    want_water = want_river or any(k in ("ship", "harbor") for k in kinds)
    want_water = want_water or rng.random() < cfg.water_fraction
    want_road = vehicles or rng.random() < cfg.road_fraction
    want_lot = (vehicles or aircraft) and rng.random() < cfg.lot_fraction
    dry = any(k not in WATER_KINDS for k in kinds)
    return LayoutNeeds(want_river, want_water, dry, want_road, want_lot)


def sample_layout(
    rng: np.random.Generator,
    kinds: list[str],
    shape: tuple[int, int],
    gsd_m: float,
    cfg: SceneLayout,
    needs: LayoutNeeds | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Land-cover map and its description, with what the object ``kinds`` need (or ``needs``,
    given: then ``kinds`` is not read)."""
    h, w = shape
    short = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    xc, yc = xx - w / 2.0, yy - h / 2.0

    # Dry land: field, with patches of bare soil and built-up area from smooth fBm.
    cover = np.full(shape, FIELD, dtype=np.uint8)
    soil = fbm(rng, shape, beta=3.5, min_wavelength_px=short / 16)
    urban = fbm(rng, shape, beta=3.5, min_wavelength_px=short / 16)
    soil_share, urban_share = _uniform(rng, _SOIL_SHARE), _uniform(rng, _URBAN_SHARE)
    cover[soil > np.quantile(soil, 1.0 - soil_share)] = SOIL
    cover[urban > np.quantile(urban, 1.0 - urban_share)] = URBAN
    layout: dict[str, Any] = {"water": None, "road": None, "lot": None}

    if needs is None:
        needs = draw_needs(rng, kinds, cfg)

    if needs.road:
        psi = float(rng.uniform(0.0, 180.0))
        off = float(rng.uniform(-_ROAD_OFFSET, _ROAD_OFFSET)) * short
        width_px = _uniform(rng, _ROAD_WIDTH_M) / gsd_m
        d = -xc * math.sin(math.radians(psi)) + yc * math.cos(math.radians(psi)) - off
        cover[np.abs(d) <= width_px / 2.0] = ASPHALT
        layout["road"] = {"angle_deg": psi, "offset_px": off, "width_px": width_px}
    if needs.lot:
        lot = {
            "cx": float(rng.uniform(0.3, 0.7)) * w,
            "cy": float(rng.uniform(0.3, 0.7)) * h,
            "length_px": _uniform(rng, _LOT_SIZE) * w,
            "width_px": _uniform(rng, _LOT_SIZE) * h,
            "angle_deg": layout["road"]["angle_deg"]
            if layout["road"]
            else float(rng.uniform(0, 180)),
        }
        win = shapes.make_window(
            lot["cx"], lot["cy"], lot["length_px"], lot["width_px"], lot["angle_deg"], shape
        )
        if win is not None:
            m = shapes.box_mask(win, lot["length_px"], lot["width_px"])
            cover[win.slices][m] = ASPHALT
        layout["lot"] = lot
    if needs.water:
        phi = float(rng.uniform(0.0, 360.0))
        wobble = fbm(rng, shape, beta=4.0, min_wavelength_px=short / 4) * _SHORE_WOBBLE * short
        d = xc * math.cos(math.radians(phi)) + yc * math.sin(math.radians(phi)) + wobble
        if needs.river:
            width_px = _uniform(rng, _RIVER_WIDTH) * short
            off = float(rng.uniform(-0.5, 0.5)) * (short - width_px) * 0.5
            water = np.abs(d - off) <= width_px / 2.0
            layout["water"] = {
                "type": "river",
                "normal_deg": phi,
                "offset_px": off,
                "width_px": width_px,
            }
        else:
            off = _uniform(rng, _SEA_SHORE_MIXED if needs.dry else _SEA_SHORE) * short
            water = d >= off
            layout["water"] = {"type": "sea", "normal_deg": phi, "offset_px": off}
        cover[water] = WATER
    return cover, layout


# ----------------------------------------------------------------------------------------------
# Objects


def _draw_size(
    rng: np.random.Generator, kind: str, max_diag_m: float
) -> tuple[float, float, float]:
    size = SIZES[kind]
    length = _uniform(rng, size.length_m)
    width = _uniform(rng, size.width) * (length if size.width_ratio else 1.0)
    height = _uniform(rng, size.height) * (length if size.height_ratio else 1.0)
    diag = math.hypot(length, width)
    if diag > max_diag_m:  # too big for the image at this GSD: shrink, keeping the aspect ratio
        f = max_diag_m / diag
        length, width, height = length * f, width * f, height * f
    return length, width, height


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    # rng.choice(len(options), p=weights / sum) without its per-call overhead: the same single
    # draw searched in the same cumulative sums, so the same pick
    weights = [w for _, w in options]
    total = sum(weights)
    cdf = list(itertools.accumulate(w / total for w in weights))
    return options[bisect.bisect_right([c / cdf[-1] for c in cdf], rng.random())][0]


def _propose(
    rng: np.random.Generator,
    kind: str,
    mode: str,
    layout: dict[str, Any],
    shape: tuple[int, int],
    gsd_m: float,
    max_diag_m: float,
) -> tuple[float, float, float, float, float, float] | None:
    """A candidate pose ``(cx, cy, angle, length_m, width_m, height_m)`` for ``mode``."""
    h, w = shape
    length, width, height = _draw_size(rng, kind, max_diag_m)
    angle = -90.0 if kind in shapes.ROUND_KINDS else float(rng.uniform(0.0, 360.0))
    # anywhere the rotated box fits inside the image
    a = math.radians(angle)
    ex = (abs(length * math.cos(a)) + abs(width * math.sin(a))) / gsd_m / 2.0 + _MARGIN_PX
    ey = (abs(length * math.sin(a)) + abs(width * math.cos(a))) / gsd_m / 2.0 + _MARGIN_PX
    cx = float(rng.uniform(min(ex, w / 2.0), max(w - ex, w / 2.0)))
    cy = float(rng.uniform(min(ey, h / 2.0), max(h - ey, h / 2.0)))
    if mode == "road":
        road = layout["road"]
        psi = math.radians(road["angle_deg"])
        along = float(rng.uniform(-0.5, 0.5)) * math.hypot(w, h)
        room = road["width_px"] / 2.0 - width / gsd_m / 2.0
        if room <= 0:
            return None
        across = float(rng.uniform(-room, room)) + road["offset_px"]
        cx = w / 2.0 + along * math.cos(psi) - across * math.sin(psi)
        cy = h / 2.0 + along * math.sin(psi) + across * math.cos(psi)
        angle = road["angle_deg"] + 180.0 * int(rng.integers(2)) + rng.normal(0, _ROAD_JITTER_DEG)
    elif mode == "lot":
        lot = layout["lot"]
        a = math.radians(lot["angle_deg"])
        s = float(rng.uniform(-0.5, 0.5)) * lot["length_px"]
        t = float(rng.uniform(-0.5, 0.5)) * lot["width_px"]
        cx = lot["cx"] + s * math.cos(a) - t * math.sin(a)
        cy = lot["cy"] + s * math.sin(a) + t * math.cos(a)
        if kind in shapes.VEHICLE_KINDS:  # parked in rows: along or across the lot
            angle = lot["angle_deg"] + 90.0 * int(rng.integers(4)) + rng.normal(0, _ROAD_JITTER_DEG)
    elif mode in ("shore", "river"):
        water = layout["water"]
        if water is None:
            return None
        phi = math.radians(water["normal_deg"])
        n = np.array([math.cos(phi), math.sin(phi)])
        tangent = np.array([-n[1], n[0]])
        u = float(rng.uniform(-0.5, 0.5)) * min(w, h)
        centre = np.array([w / 2.0, h / 2.0]) + u * tangent
        if mode == "shore":
            if water["type"] == "sea":
                line, into = water["offset_px"], n
            else:
                side = 1.0 if rng.random() < 0.5 else -1.0
                line = water["offset_px"] + side * water["width_px"] / 2.0
                into = -side * n
            root = centre + line * n
            # the quay is the rear 18 % of the length: put its front edge on the shoreline
            c = root + into * (0.64 * length / gsd_m / 2.0)
            cx, cy = float(c[0]), float(c[1])
            angle = math.degrees(math.atan2(into[1], into[0]))
        else:
            skew = math.radians(rng.normal(0.0, _BRIDGE_SKEW_DEG))
            span = (water["width_px"] * gsd_m) / math.cos(skew)
            room = math.sqrt(max(max_diag_m**2 - width**2, 0.0)) - span  # what the image allows
            approach = min(_uniform(rng, _BRIDGE_APPROACH_M), room / 2.0)
            length = span + 2.0 * approach
            if math.hypot(length, width) > max_diag_m:
                return None
            c = centre + water["offset_px"] * n
            cx, cy = float(c[0]), float(c[1])
            angle = math.degrees(phi + skew) + 180.0 * int(rng.integers(2))
    return cx, cy, angle % 360.0, length, width, height


def _accept(
    mode: str, cover_px: np.ndarray, fp: np.ndarray, win: shapes.Window, length: float
) -> bool:
    """Whether the footprint's land cover suits ``mode``: only allowed covers; a harbor half to
    90 % over water; a bridge with both ends on land and its middle over water."""
    if mode in ALLOWED_COVERS:
        return bool(_ALLOWED_TABLE[mode][cover_px].all())
    wet = cover_px == WATER
    if mode == "shore":
        return 0.5 <= wet.mean() <= 0.9
    if mode == "river":
        ends = np.abs(win.s[fp]) > length / 2.0 * 0.8
        centre = np.abs(win.s[fp]) < length / 2.0 * 0.2
        return bool(
            ends.any() and centre.any() and (~wet[ends]).mean() >= 0.9 and wet[centre].mean() >= 0.9
        )
    raise ValueError(f"unknown placement mode {mode!r}")


def _modes(kind: str, layout: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    options = PLACEMENT.get(kind, (("ground", 1.0),))
    have = {"road": layout["road"] is not None, "lot": layout["lot"] is not None}
    usable = tuple((m, p) for m, p in options if have.get(m, True))
    return usable or (("land", 1.0),)


def _off_image(cx: float, cy: float, lp: float, wp: float, angle: float, w: int, h: int) -> bool:
    """Whether a corner of the box comes within ``_MARGIN_PX`` of the image edge (the arithmetic
    of :func:`shapes.obb_polygon` on floats)."""
    a = math.radians(angle)
    ux, uy = math.cos(a), math.sin(a)
    vx, vy = -math.sin(a), math.cos(a)
    hl, hw = lp / 2.0, wp / 2.0
    xs = (
        cx + hl * ux - hw * vx,
        cx + hl * ux + hw * vx,
        cx - hl * ux + hw * vx,
        cx - hl * ux - hw * vx,
    )
    ys = (
        cy + hl * uy - hw * vy,
        cy + hl * uy + hw * vy,
        cy - hl * uy + hw * vy,
        cy - hl * uy - hw * vy,
    )
    return min(*xs, *ys) < _MARGIN_PX or max(xs) > w - _MARGIN_PX or max(ys) > h - _MARGIN_PX


#: Probe points of :func:`_probe_rejects`, as fractions of the box length and width.
_PROBE_S, _PROBE_T = (g.ravel() for g in np.meshgrid([-0.4, -0.2, 0.0, 0.2, 0.4], [-0.3, 0.0, 0.3]))
#: Placement mode -> allowed land covers as a lookup table indexed by cover code.
_ALLOWED_TABLE = {
    mode: np.isin(np.arange(len(COVER_NAMES)), sorted(covers))
    for mode, covers in ALLOWED_COVERS.items()
}


def _probe_rejects(
    kind: str,
    mode: str,
    pose: tuple[float, float, float, float, float],
    gap: float,
    cover: np.ndarray,
    occupied: np.ndarray,
) -> bool:
    """Whether a few pixels of the box already rule the pose out (cheap; exact: a pixel it finds
    on the footprint with a cover ``mode`` forbids, or in the keep-out box and occupied, makes
    :func:`sample_objects`' full test reject the pose too). ``pose = (cx, cy, angle, lp, wp)``;
    the box lies inside the image."""
    cx, cy, angle, lp, wp = pose
    a = math.radians(angle)
    ux, uy = math.cos(a), math.sin(a)  # shapes.axes: u = (ux, uy), v = (-uy, ux)
    vx = -math.sin(a)
    # the centre's pixel first, in plain floats
    col, row = math.floor(cx), math.floor(cy)
    dx, dy = col + 0.5 - cx, row + 0.5 - cy
    if (
        occupied[row, col]
        and abs(dx * ux + dy * uy) <= (lp + 2 * gap) / 2.0
        and abs(dx * vx + dy * ux) <= (wp + 2 * gap) / 2.0
    ):
        return True
    ps, pt = _PROBE_S * lp, _PROBE_T * wp
    cols = np.floor(cx + ps * ux + pt * vx)
    rows = np.floor(cy + ps * uy + pt * ux)
    # the arithmetic of shapes.make_window, so these are the window's own s, t values
    dxs, dys = cols + 0.5 - cx, rows + 0.5 - cy
    s, t = dxs * ux + dys * uy, dxs * vx + dys * ux
    ri, ci = rows.astype(np.intp), cols.astype(np.intp)
    keep_out = (np.abs(s) <= (lp + 2 * gap) / 2.0) & (np.abs(t) <= (wp + 2 * gap) / 2.0)
    if (keep_out & occupied[ri, ci]).any():
        return True
    allowed = _ALLOWED_TABLE.get(mode)
    if allowed is None:
        return False
    bad = ~allowed[cover[ri, ci]]
    if not bad.any():
        return False
    # a pixel of a forbidden cover rules the pose out if it is on the footprint
    on_fp = shapes.union(shapes.parts(kind, shapes.Window(0, 0, 0, 0, s[bad], t[bad]), lp, wp))
    return bool(on_fp.any())


def sample_objects(
    rng: np.random.Generator,
    classes: list[tuple[str, str]],
    cover: np.ndarray,
    layout: dict[str, Any],
    gsd_m: float,
    cfg: SceneLayout,
    probe: bool = False,
    masks: list[tuple[shapes.Window, shapes.Parts]] | None = None,
) -> list[SceneObject]:
    """Place ``(class, kind)`` objects by rejection sampling (inside, apart, on a fitting cover).

    ``probe``: rule most poses out from a few pixels first (:func:`_probe_rejects`; the same
    objects, faster). ``masks``: receives each placed object's window and part masks (the window
    holds the keep-out margin too).
    """
    shape = cover.shape
    h, w = shape
    max_diag_m = _FIT * min(h, w) * gsd_m
    gap = cfg.min_gap_m / gsd_m
    occupied = np.zeros(shape, dtype=bool)
    placed: list[SceneObject] = []
    for cls, kind in classes:
        options = _modes(kind, layout)
        for _ in range(cfg.max_tries):
            mode = _pick(rng, options)
            pose = _propose(rng, kind, mode, layout, shape, gsd_m, max_diag_m)
            if pose is None:
                continue
            cx, cy, angle, length, width, height = pose
            lp, wp = length / gsd_m, width / gsd_m
            if _off_image(cx, cy, lp, wp, angle, w, h):
                continue
            if probe and _probe_rejects(kind, mode, (cx, cy, angle, lp, wp), gap, cover, occupied):
                continue
            win = shapes.make_window(cx, cy, lp + 2 * gap, wp + 2 * gap, angle, shape)
            if win is None:
                continue
            part_masks = shapes.parts(kind, win, lp, wp)
            fp = shapes.union(part_masks)
            if not fp.any():
                continue
            cover_px = cover[win.slices][fp]
            if not _accept(mode, cover_px, fp, win, lp):
                continue
            keep_out = shapes.box_mask(win, lp + 2 * gap, wp + 2 * gap)
            if (occupied[win.slices] & keep_out).any():
                continue
            occupied[win.slices] |= keep_out
            on = COVER_NAMES[int(np.bincount(cover_px, minlength=len(COVER_NAMES)).argmax())]
            material = MATERIALS[kind]
            attrs: dict[str, Any] = {}
            if kind == "freight":
                attrs["cargo"] = (
                    "bare metal" if rng.random() < BARE_METAL_FREIGHT else "painted metal"
                )
            placed.append(
                SceneObject(
                    len(placed),
                    cls,
                    kind,
                    cx,
                    cy,
                    length,
                    width,
                    height,
                    angle,
                    gsd_m,
                    material,
                    mode,
                    on,
                    attrs,
                )
            )
            if masks is not None:
                masks.append((win, part_masks))
            break
    return placed


def draw_classes(
    rng: np.random.Generator, dataset: str, spec: DatasetSpec, cfg: SceneLayout
) -> list[tuple[str, str]]:
    """How many objects and of which ``(class, kind)``: the first class is uniform, later ones
    repeat it with probability ``same_class_fraction`` (real scenes are rather homogeneous)."""
    n = int(rng.integers(int(spec.objects_per_image.lo), int(spec.objects_per_image.hi) + 1))
    out: list[tuple[str, str]] = []
    first = None
    for _ in range(n):
        if first is not None and rng.random() < cfg.same_class_fraction:
            cls = first
        else:
            cls = spec.classes[int(rng.integers(len(spec.classes)))]
        first = first or cls
        kinds = CLASS_KINDS[dataset][cls]
        out.append((cls, kinds[int(rng.integers(len(kinds)))]))
    return out


def placement_order(classes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Bridges and harbors first, then big objects: they are the hardest to fit. The stable sort
    keeps the draw deterministic."""
    return sorted(classes, key=lambda ck: (ck[1] not in PLACE_FIRST, -SIZES[ck[1]].length_m[1]))


def sample_scene(
    rng: np.random.Generator,
    dataset: str,
    split: str,
    index: int,
    stem: str,
    image_file: str,
    spec: DatasetSpec,
    gsd_m: float,
    cfg: SceneLayout,
) -> Scene:
    """Draw one image's scene graph: land cover, then objects (no overlap, fully inside)."""
    shape = (spec.image_size.height, spec.image_size.width)
    classes = placement_order(draw_classes(rng, dataset, spec, cfg))
    cover, layout = sample_layout(rng, [k for _, k in classes], shape, gsd_m, cfg)
    objects = sample_objects(rng, classes, cover, layout, gsd_m, cfg)
    return Scene(
        dataset, split, index, stem, image_file, shape[1], shape[0], gsd_m, cover, layout, objects
    )


# ----------------------------------------------------------------------------------------------
# Captions

#: Captions count in words up to twelve, in digits above ("13 vans").
CAPTION_WORDS_UP_TO = 12

_WHERE = {
    "road": "on a road", "lot": "in a parking lot", "water": "in the water",
    "shore": "along the shore", "river": "over a river",
}  # fmt: skip
_ON_COVER = {
    "field": "on a field", "soil": "on bare ground", "urban": "in a built-up area",
    "asphalt": "on tarmac", "water": "in the water",
}  # fmt: skip
_NEXT_TO = {
    "field": "a field", "soil": "bare ground", "urban": "buildings", "asphalt": "a road",
    "water": "the water",
}  # fmt: skip


def _where(o: SceneObject) -> str:
    if o.placement == "lot" and o.kind in ("plane", "helicopter"):
        return "on an apron"
    return _WHERE.get(o.placement, _ON_COVER[o.on])


def count_phrase(dataset: str, counts: dict[str, int], articles: bool = True) -> str:
    """``{"car": 3, "truck": 1}`` -> "three cars and a truck" (concept words of the classes);
    without ``articles`` a single object is counted ("one truck")."""
    items = []
    for cls, n in counts.items():
        info = class_info(dataset, cls)
        if n == 1:
            items.append(with_article(info.concept) if articles else "one " + info.concept)
        else:
            items.append(f"{number_word(n, CAPTION_WORDS_UP_TO)} {info.plural}")
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _counts(dataset: str, objects: list[SceneObject]) -> dict[str, int]:
    order = {c: i for i, c in enumerate(CLASS_KINDS[dataset])}
    counts: dict[str, int] = {}
    for o in objects:
        counts[o.cls] = counts.get(o.cls, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0]])))


def caption(scene: Scene) -> str:
    """A plain-English caption from the graph (counts, where, what is next to it, state).

    e.g. "three cars and a truck on a road next to a field at night; one truck is running".
    """
    objs = scene.objects
    night = bool(scene.sensor.get("night", False))
    if not objs:
        covers = np.bincount(scene.cover.ravel(), minlength=len(COVER_NAMES))
        text = f"no objects, only {_NEXT_TO[COVER_NAMES[int(covers.argmax())]]}"
        return text + (" at night" if night else "")
    where_of = [_where(o) for o in objs]
    where = max(sorted(set(where_of)), key=where_of.count)
    under = {o.on for o in objs}
    covers = np.bincount(scene.cover.ravel(), minlength=len(COVER_NAMES))
    others = [i for i in np.argsort(-covers, kind="stable") if COVER_NAMES[i] not in under]
    text = f"{count_phrase(scene.dataset, _counts(scene.dataset, objs))} {where}"
    if others and covers[others[0]] > 0:
        text += f" next to {_NEXT_TO[COVER_NAMES[others[0]]]}"
    if night:
        text += " at night"
    for flag, verb in (("running", "running"), ("moving", "moving")):
        active = [o for o in objs if o.attrs.get(flag)]
        if active:
            counts = _counts(scene.dataset, active)
            be = "is" if len(active) == 1 else "are"
            text += f"; {count_phrase(scene.dataset, counts, articles=False)} {be} {verb}"
    return text
