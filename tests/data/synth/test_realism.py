"""SOI-mini must not become easier than the real data (docs/data.md): the default params.yaml,
generated small and imported like real data, stays within the real figures of
``babelrs_core.data.synth.realism``; settings that make it easier are reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from babelrs_core.config import load_params
from babelrs_core.data.importing import import_datasets
from babelrs_core.data.layout import dataset_roots
from babelrs_core.data.manifest import read_manifest
from babelrs_core.data.synth.generate import generate_soi_mini
from babelrs_core.data.synth.realism import (
    REAL,
    check_against_real,
    realism_notes,
    soi_mini_statistics,
)

ROOT = Path(__file__).resolve().parents[3]
#: Only the split sizes change: every other number is the default params.yaml.
SMALL = {
    "soi_mini.sardet.splits": {"train": 10},
    "soi_mini.dota.splits": {"train": 10},
    "soi_mini.dronevehicle.splits": {"train": 10},
}


def _manifest(tmp: Path, overrides: dict[str, Any]) -> pd.DataFrame:
    params = load_params(ROOT / "params.yaml", overrides)
    raw = tmp / "raw"
    generate_soi_mini(params, raw, progress=False)
    import_datasets(dataset_roots(raw), tmp / "m.parquet", params, progress=False)
    return read_manifest(tmp / "m.parquet")


@pytest.fixture(scope="module")
def default_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _manifest(tmp_path_factory.mktemp("realism"), SMALL)


def test_default_soi_mini_is_within_the_real_figures(default_frame: pd.DataFrame) -> None:
    stats = soi_mini_statistics(default_frame)
    assert set(stats) == {"sardet", "dota", "dronevehicle"}
    assert stats["dronevehicle"]["frame_px"] == [640, 512]  # the real IR frame
    assert check_against_real(stats) == []
    assert all(isinstance(n, str) for n in realism_notes(stats))


def test_every_real_figure_has_a_source() -> None:
    for real in REAL.values():
        ranges = list(real.class_long_side_px.values())
        ranges += [real.objects_per_mpx] if real.objects_per_mpx else []
        ranges += [real.median_size_px[1]] if real.median_size_px else []
        for fig in ranges:
            assert 0 < fig.lo <= fig.hi
        figures = [real.frame_px, real.classes, real.soi_mini_classes, real.objects_per_image]
        for fig in [*figures, *ranges, *real.class_share.values()]:
            assert fig.source.strip()


def test_too_easy_dronevehicle_is_reported(tmp_path: Path) -> None:
    """Objects 4x larger than real (GSD / 4) and one object per image where the real mean is
    17.6: both are reported, in words that name the dataset and the real figure."""
    easy = {
        "soi_mini.sardet.splits": {"train": 1},
        "soi_mini.dota.splits": {"train": 1},
        "soi_mini.dronevehicle.splits": {"train": 6},
        "soi_mini.dronevehicle.objects_per_image": {"lo": 1, "hi": 1},
        "soi_mini.ir.gsd_m": 0.125 / 4,
    }
    problems = check_against_real(soi_mini_statistics(_manifest(tmp_path, easy)))
    # (one SARDet / DOTA image cannot show all their classes: only DroneVehicle is looked at)
    problems = [p for p in problems if p.startswith("dronevehicle")]
    assert any(p.startswith("dronevehicle: 1 objects per image, below 0.5 x the real mean 17.6")
               for p in problems), problems  # fmt: skip
    assert any(p.startswith("dronevehicle/") and "longer than the real" in p for p in problems)


def _scaled(frame: pd.DataFrame, dataset: str, factor: float) -> pd.DataFrame:
    """The manifest as if ``dataset`` had been rendered at GSD / ``factor`` (boxes scaled)."""
    out = frame.copy()
    rows = out["dataset"].eq(dataset) & out["object_index"].ge(0)
    for col in ("x1", "y1", "x2", "y2"):
        out.loc[rows, col] = out.loc[rows, col] * factor
    out.loc[rows, "poly"] = pd.Series(
        [np.asarray(p) * factor for p in out.loc[rows, "poly"]], index=out.index[rows]
    )
    return out


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("dota", "dota: median hbox_height_px"),
        ("sardet", "sardet/aircraft: median long side"),
        ("dronevehicle", "dronevehicle/car: median long side"),
    ],
)
def test_objects_4x_larger_than_real_are_reported(
    default_frame: pd.DataFrame, dataset: str, expected: str
) -> None:
    problems = check_against_real(soi_mini_statistics(_scaled(default_frame, dataset, 4.0)))
    assert any(p.startswith(expected) for p in problems), problems
    assert all(p.startswith(dataset) for p in problems)


def test_fewer_classes_are_reported(default_frame: pd.DataFrame) -> None:
    keep = ~default_frame["dataset"].eq("dota") | default_frame["class_name"].isin(
        ["small-vehicle", "plane"]
    )
    problems = check_against_real(soi_mini_statistics(default_frame[keep]))
    assert problems == [
        "dota: 2 classes (plane, small-vehicle); the real set has 15 and SOI-mini keeps 6 "
        f"[{REAL['dota'].soi_mini_classes.source}]"
    ]
