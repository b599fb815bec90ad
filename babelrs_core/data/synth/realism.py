"""SOI-mini must not become easier than the real data: the real figures and the check.

One place for the published figures of the three real datasets that SOI-mini imitates
(SARDet-100K, DOTA v1.0, DroneVehicle infrared) — class count, objects per image, object size in
pixels at the resolution the real images are used at — each with its source. Figures that are not
published but derived from physics (a vehicle's length divided by the ground sample distance) say
so in their source string. Tolerances that are ours, not the datasets', are named as such.

* :func:`soi_mini_statistics` measures the same quantities on a manifest
  (:func:`babelrs_core.data.manifest.read_manifest`);
* :func:`check_against_real` lists, in plain words, every way the measured data is *easier* than
  the real data (fewer classes, fewer objects per image, larger objects); empty means within;
* :func:`realism_notes` lists the other known deviations (smaller frames, objects smaller than
  real, class balance), which are not failures.

Oriented sizes come from the manifest's polygons: the mean lengths of opposite edges, which for the
rectangles SOI-mini writes equal the ``w`` / ``h`` of ``detector.rbox.poly_to_rbox`` (without
importing mmrotate). SARDet's polygons are its horizontal boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: SOI-mini's mean objects per image must reach this share of the real mean. Our tolerance (a
#: small generated set need not be as crowded as the real one), not a published figure.
MIN_COUNT_SHARE = 0.5

#: Size statistics: which quantiles of a size are reported.
QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}


@dataclass(frozen=True)
class Figure:
    """A real figure (a number or a ``(lo, hi)`` range) with where it comes from."""

    value: float | tuple[float, float]
    source: str

    @property
    def lo(self) -> float:
        return float(self.value[0] if isinstance(self.value, tuple) else self.value)

    @property
    def hi(self) -> float:
        return float(self.value[1] if isinstance(self.value, tuple) else self.value)


@dataclass(frozen=True)
class RealDataset:
    """What SOI-mini's imitation of one real dataset must stay within."""

    name: str
    frame_px: Figure  # (width, height) of the images as they are used
    classes: Figure  # class count of the real dataset
    soi_mini_classes: Figure  # classes SOI-mini keeps (its floor)
    objects_per_image: Figure  # real mean
    #: real objects per megapixel (lo, hi) where the real images are not SOI-mini's frame
    objects_per_mpx: Figure | None = None
    #: dataset-wide size: (metric, range the real median lies in)
    median_size_px: tuple[str, Figure] | None = None
    #: long side (px) of the bulk of each class's real objects
    class_long_side_px: dict[str, Figure] = field(default_factory=dict)
    #: share of each class among the real objects
    class_share: dict[str, Figure] = field(default_factory=dict)


def _length_range(length_m: tuple[float, float], gsd_m: tuple[float, float]) -> tuple[float, float]:
    """Pixels spanned by lengths ``length_m`` imaged at ground sample distances ``gsd_m``."""
    return round(length_m[0] / gsd_m[1], 1), round(length_m[1] / gsd_m[0], 1)


# DroneVehicle's IR ground sample distance: 17 um pitch x altitude / 13 mm focal length, at the
# paper's 80-120 m altitude (the camera figures are the lead's estimate, params.yaml ir.gsd_m).
_DV_GSD_M = (0.017e-3 * 80 / 13e-3, 0.017e-3 * 120 / 13e-3)  # 0.105 .. 0.157 m
_DV_GSD_SRC = (
    "derived: length / GSD, GSD 0.105-0.157 m = 17 um pitch x 80-120 m altitude (Sun et al., "
    "TCSVT 2022) / 13 mm lens (camera assumed, params.yaml ir.gsd_m)"
)
_VEHICLE_SRC = "vehicle lengths from docs/soi_mini.md §6.3 (approximate)"
_SAR_1M = (
    "at 1 m GSD: SAR-AIRcraft (GF-3, 1 m) and SSDD's finest; sources at >= 1 m hold >= 57 % of "
    "the instances (SAR-AIRcraft, OGSOD, ShipDataset, SSDD: 140,536 of 245,653, "
    "docs/soi_mini.md §5.1); "
    "MSAR's sub-metre HISEA-1 images (65,202 instances) can show them larger"
)

REAL: dict[str, RealDataset] = {
    "sardet": RealDataset(
        name="sardet",
        frame_px=Figure(
            (512, 512),
            "SARDet-100K README (docs/soi_mini.md §5.1): mostly 512x512 patches (cropped sources); "
            "others vary",
        ),
        classes=Figure(6, "SARDet-100K README: ship, aircraft, car, tank, bridge, harbor"),
        soi_mini_classes=Figure(6, "SOI-mini keeps all 6 (params.yaml soi_mini.sardet)"),
        objects_per_image=Figure(
            2.11, "SARDet-100K README: 245,653 instances in 116,598 images = 2.11 per image"
        ),
        class_long_side_px={
            "aircraft": Figure(
                _length_range((12.0, 70.0), (1.0, 1.0)),
                "derived: aircraft 12-70 m long (public type specs) " + _SAR_1M,
            ),
            "ship": Figure(
                _length_range((12.0, 150.0), (1.0, 25.0)),
                "derived: ships 12-150 m (public specs) at 1-25 m GSD (SSDD 1-15 m, "
                "ShipDataset 3-25 m, docs/soi_mini.md §5.1); upper end " + _SAR_1M,
            ),
            "tank": Figure(
                _length_range((10.0, 60.0), (1.0, 3.0)),
                "derived: oil tanks 10-60 m across (public specs) at OGSOD's 3 m GSD (GF-3) "
                "to 1 m; " + _SAR_1M,
            ),
            "car": Figure(
                _length_range((4.2, 4.9), (0.1, 0.3)),
                "derived: cars come from SIVED, airborne 0.1-0.3 m GSD (docs/soi_mini.md §5.1); "
                + _VEHICLE_SRC,
            ),
        },
    ),
    "dota": RealDataset(
        name="dota",
        frame_px=Figure(
            (800, 800),
            "SOI-Det uses DOTA in 800-px patches (DOTA_800pix, docs/soi_mini.md §5.2/5.4); "
            "DOTA v1.0 "
            "images are 800-4000 px (Xia et al., CVPR 2018)",
        ),
        classes=Figure(15, "Xia et al., CVPR 2018: DOTA v1.0 has 15 categories"),
        soi_mini_classes=Figure(
            6, "SOI-mini keeps 6 of the 15 (params.yaml soi_mini.dota.classes, a design choice)"
        ),
        objects_per_image=Figure(
            67.1, "Xia et al., CVPR 2018: 188,282 instances in 2,806 images (800-4000 px) = 67.1"
        ),
        objects_per_mpx=Figure(
            (round(188282 / 2806 / 16.0, 1), round(188282 / 2806 / 0.64, 1)),
            "derived: 67.1 objects per image over images of 0.64-16 megapixels (800x800 to "
            "4000x4000, Xia et al.) puts the dataset's density between these bounds",
        ),
        median_size_px=(
            "hbox_height_px",
            Figure(
                (10.0, 50.0),
                "Xia et al., CVPR 2018: instance size (horizontal box height) from about 10 px "
                "to above 300 px, most instances small (the paper's 10-50 px bin)",
            ),
        ),
    ),
    "dronevehicle": RealDataset(
        name="dronevehicle",
        frame_px=Figure(
            (640, 512), "DroneVehicle README: 840x712 with a 100-px white border, 640x512 inside"
        ),
        classes=Figure(5, "DroneVehicle README: car, truck, bus, van, freight car"),
        soi_mini_classes=Figure(5, "SOI-mini keeps all 5 (params.yaml soi_mini.dronevehicle)"),
        objects_per_image=Figure(
            17.6,
            "Sun et al., TCSVT 2022 / README: 500,517 IR oriented boxes in 28,439 IR images = 17.6",
        ),
        class_long_side_px={
            "car": Figure(_length_range((4.2, 4.9), _DV_GSD_M), _DV_GSD_SRC + "; " + _VEHICLE_SRC),
            "van": Figure(_length_range((5.0, 5.5), _DV_GSD_M), _DV_GSD_SRC + "; " + _VEHICLE_SRC),
            "truck": Figure(
                _length_range((7.0, 12.0), _DV_GSD_M), _DV_GSD_SRC + "; " + _VEHICLE_SRC
            ),
            "freight car": Figure(
                _length_range((7.0, 12.0), _DV_GSD_M), _DV_GSD_SRC + "; " + _VEHICLE_SRC
            ),
            "bus": Figure(
                _length_range((10.0, 13.0), _DV_GSD_M), _DV_GSD_SRC + "; " + _VEHICLE_SRC
            ),
        },
        class_share={
            name: Figure(round(n / 500517, 3), f"DroneVehicle README: {n:,} of 500,517 IR boxes")
            for name, n in (
                ("car", 428086),
                ("truck", 25960),
                ("bus", 16590),
                ("van", 12708),
                ("freight car", 17173),
            )
        },
    ),
}


def _oriented_sides(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 8)`` polygons -> (long side, short side): mean lengths of opposite edges."""
    p = polys.reshape(-1, 4, 2)
    edge = np.linalg.norm(np.roll(p, -1, axis=1) - p, axis=2)  # (N, 4): p0p1, p1p2, p2p3, p3p0
    a = (edge[:, 0] + edge[:, 2]) / 2
    b = (edge[:, 1] + edge[:, 3]) / 2
    return np.maximum(a, b), np.minimum(a, b)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {k: float("nan") for k in QUANTILES}
    return {k: round(float(np.quantile(values, q)), 1) for k, q in QUANTILES.items()}


def _dataset_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    per_image = frame.groupby("image_id")["object_index"].apply(lambda s: int((s >= 0).sum()))
    sizes = frame.drop_duplicates("image_id")[["width", "height"]]
    w, h = sizes.value_counts().idxmax()
    objects = frame[frame["object_index"] >= 0]
    polys = (
        np.stack([np.asarray(p, dtype=np.float64) for p in objects["poly"]])
        if len(objects)
        else np.zeros((0, 8))
    )
    long_side, short_side = _oriented_sides(polys)
    hbox_h = (objects["y2"] - objects["y1"]).to_numpy(dtype=np.float64)
    classes = objects["class_name"].to_numpy()
    names = sorted(set(classes))
    mean_area_mpx = float((sizes["width"] * sizes["height"]).mean()) / 1e6
    return {
        "images": len(per_image),
        "objects": len(objects),
        "frame_px": [int(w), int(h)],
        "objects_per_image": {
            "mean": round(float(per_image.mean()), 2),
            "min": int(per_image.min()),
            "max": int(per_image.max()),
        },
        "objects_per_mpx": round(float(per_image.mean()) / mean_area_mpx, 1),
        "classes": names,
        "n_classes": len(names),
        "class_share": {c: round(float((classes == c).mean()), 3) for c in names},
        "long_side_px": _quantiles(long_side),
        "sqrt_area_px": _quantiles(np.sqrt(long_side * short_side)),
        "hbox_height_px": _quantiles(hbox_h),
        "class_long_side_px": {
            c: round(float(np.median(long_side[classes == c])), 1) for c in names
        },
    }


def soi_mini_statistics(manifest_frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per dataset (``sardet`` / ``dota`` / ``dronevehicle``, all splits pooled): images, objects,
    frame, objects per image (mean / min / max) and per megapixel, classes and their shares, object
    sizes in pixels (oriented long side, sqrt of the oriented area, horizontal box height: p10 /
    p50 / p90) and each class's median long side."""
    return {
        str(ds): _dataset_statistics(group)
        for ds, group in manifest_frame.groupby("dataset", sort=True)
    }


def _fmt(v: float | tuple[float, float]) -> str:
    return f"{v[0]:g}-{v[1]:g}" if isinstance(v, tuple) else f"{v:g}"


def check_against_real(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every way the measured SOI-mini is easier than the real data, one sentence each (empty:
    within the real ranges): fewer classes than SOI-mini keeps, fewer objects per image (or per
    megapixel) than the real data allows, a median object larger than the real median or a class
    whose median object is longer than the real class's objects."""
    out: list[str] = []
    for name, real in REAL.items():
        s = stats.get(name)
        if not s:
            continue
        if s["n_classes"] < real.soi_mini_classes.lo:
            out.append(
                f"{name}: {s['n_classes']} classes ({', '.join(s['classes'])}); the real set has "
                f"{_fmt(real.classes.value)} and SOI-mini keeps {_fmt(real.soi_mini_classes.value)}"
                f" [{real.soi_mini_classes.source}]"
            )
        if real.objects_per_mpx is not None:
            if s["objects_per_mpx"] < real.objects_per_mpx.lo:
                out.append(
                    f"{name}: {s['objects_per_mpx']:g} objects per megapixel, below the real "
                    f"{_fmt(real.objects_per_mpx.value)} [{real.objects_per_mpx.source}]"
                )
        else:
            mean = s["objects_per_image"]["mean"]
            if mean < MIN_COUNT_SHARE * real.objects_per_image.lo:
                out.append(
                    f"{name}: {mean:g} objects per image, below {MIN_COUNT_SHARE:g} x the real "
                    f"mean {_fmt(real.objects_per_image.value)} "
                    f"[{real.objects_per_image.source}]"
                )
        if real.median_size_px is not None:
            metric, fig = real.median_size_px
            median = s[metric]["p50"]
            if median > fig.hi:
                out.append(
                    f"{name}: median {metric} {median:g} px, larger than the real median "
                    f"({_fmt(fig.value)} px) [{fig.source}]"
                )
        for cls, fig in real.class_long_side_px.items():
            got = s["class_long_side_px"].get(cls)
            if got is not None and got > fig.hi:
                out.append(
                    f"{name}/{cls}: median long side {got:g} px, longer than the real "
                    f"{_fmt(fig.value)} px [{fig.source}]"
                )
    return out


def realism_notes(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Known deviations that do not make SOI-mini easier, or that are SOI-mini design choices:
    a smaller frame than the real images, classes whose objects are smaller than real, a count
    below the real mean but within :data:`MIN_COUNT_SHARE`, a class mix unlike the real one."""
    out: list[str] = []
    for name, real in REAL.items():
        s = stats.get(name)
        if not s:
            continue
        w, h = s["frame_px"]
        rw, rh = int(real.frame_px.lo), int(real.frame_px.hi)
        if w * h < rw * rh:
            out.append(f"{name}: frame {w}x{h}, smaller than the real {rw}x{rh}")
        mean = s["objects_per_image"]["mean"]
        if real.objects_per_mpx is None and mean < real.objects_per_image.lo:
            out.append(
                f"{name}: {mean:g} objects per image, below the real mean "
                f"{_fmt(real.objects_per_image.value)} (within the {MIN_COUNT_SHARE:g} tolerance)"
            )
        for cls, fig in real.class_long_side_px.items():
            got = s["class_long_side_px"].get(cls)
            if got is not None and got < fig.lo:
                out.append(
                    f"{name}/{cls}: median long side {got:g} px, smaller than the real "
                    f"{_fmt(fig.value)} px (harder than real)"
                )
        for cls, fig in real.class_share.items():
            got = s["class_share"].get(cls, 0.0)
            if abs(got - fig.lo) > 0.25:
                out.append(f"{name}/{cls}: {got:.0%} of the objects, real {fig.lo:.1%}")
            typical = real.class_long_side_px.get(cls)
            median = s["long_side_px"]["p50"]
            if fig.lo > 0.5 and typical is not None and median > typical.hi:
                out.append(
                    f"{name}: median long side {median:g} px over all classes; the real median "
                    f"object is a {cls} ({fig.lo:.1%} of the objects), {_fmt(typical.value)} px"
                )
    return out
