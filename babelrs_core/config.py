"""Pydantic models of ``params.yaml``: the single home of every number.

Loading validates everything at once: a wrong type, a negative size, an unknown modality or encoder
fails with a :class:`ConfigError` naming the file, the dotted key and the allowed values, before any
work starts. Unknown keys are errors too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from babelrs_core.concepts import DATASETS

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Split = Literal["train", "val", "test"]
Modality = Literal["sar", "rgb", "ir"]
DatasetName = Literal["sardet", "dota", "dronevehicle"]
EncoderName = Literal["efficientnet_lite0", "vit_tiny", "vit_small", "vit_base", "vit_large"]

DEFAULT_PARAMS = Path("params.yaml")


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Range(Strict):
    """A closed interval [lo, hi] a generator draws from."""

    lo: float
    hi: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.hi < self.lo:
            raise ValueError(f"hi ({self.hi}) must be >= lo ({self.lo})")
        return self


class ImageSize(Strict):
    """Width and height in pixels."""

    width: PosInt
    height: PosInt


class Paths(Strict):
    """Where each stage reads and writes, relative to the project root."""

    raw: Path = Path("data/raw/soi_mini")
    manifest: Path = Path("data/manifest/soi_mini.parquet")
    preview: Path = Path("docs/img/soi_mini_preview.png")


class SarSensor(Strict):
    """SAR sensor model (DATA.md §6.1)."""

    looks: list[PosInt] = [1, 2, 3, 4, 5]
    incidence_deg: Range = Range(lo=20, hi=45)
    gsd_m: PosFloat = 1.0
    psf_sigma_px: Range = Range(lo=0.5, hi=1.0)
    nesz_db: Range = Range(lo=-25, hi=-22)
    scatterer_gain_db: Range = Range(lo=10, hi=30)
    jpeg_fraction: Fraction = 0.0


class IrSensor(Strict):
    """Thermal (LWIR) sensor model (DATA.md §6.2)."""

    night_fraction: Fraction = 0.4
    running_fraction: Fraction = 0.5
    gsd_m: PosFloat = 0.25
    blur_sigma_px: Range = Range(lo=0.8, hi=1.5)
    netd_k: Range = Range(lo=0.03, hi=0.08)
    fixed_pattern: Range = Range(lo=0.002, hi=0.01)
    sky_k: Range = Range(lo=230, hi=270)
    border_px: NonNegInt = 100


class RgbSensor(Strict):
    """Optical aerial sensor model (DATA.md §6.3)."""

    gsd_m: PosFloat = 0.3
    sun_elevation_deg: Range = Range(lo=20, hi=70)
    blur_sigma_px: Range = Range(lo=0.5, hi=1.0)
    haze: Range = Range(lo=0.0, hi=0.15)
    jpeg_quality: Range = Range(lo=70, hi=95)


class DatasetSpec(Strict):
    """How many images of each split, which classes, how many objects per image."""

    splits: dict[Split, NonNegInt]
    classes: list[str]
    image_size: ImageSize
    objects_per_image: Range = Range(lo=1, hi=6)


class SoiMini(Strict):
    """SOI-mini, the embedded default dataset, generated in the three real on-disk formats."""

    sardet: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 8, "test": 16},
        classes=list(DATASETS["sardet"].class_names),
        image_size=ImageSize(width=256, height=256),
    )
    dota: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 16},
        classes=["small-vehicle", "large-vehicle", "plane", "ship", "storage-tank", "harbor"],
        image_size=ImageSize(width=256, height=256),
    )
    dronevehicle: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 8, "test": 16},
        classes=list(DATASETS["dronevehicle"].class_names),
        image_size=ImageSize(width=320, height=256),
    )
    sar: SarSensor = SarSensor()
    ir: IrSensor = IrSensor()
    rgb: RgbSensor = RgbSensor()

    @model_validator(mode="after")
    def _known_classes(self) -> SoiMini:
        for name in ("sardet", "dota", "dronevehicle"):
            spec: DatasetSpec = getattr(self, name)
            allowed = DATASETS[name].class_names
            bad = [c for c in spec.classes if c not in allowed]
            if bad:
                raise ValueError(
                    f"{name}.classes: unknown {bad}; allowed: {', '.join(allowed)}"
                )
            if not spec.classes:
                raise ValueError(f"{name}.classes: must not be empty")
        return self


class Importers(Strict):
    """Importer options for the real formats."""

    dronevehicle_modalities: list[Literal["ir", "rgb"]] = ["ir"]
    dronevehicle_border_px: NonNegInt = 100
    min_box_size_px: PosFloat = 1.0


class Preview(Strict):
    """The sample mosaic written by ``babelrs data preview``."""

    per_modality: PosInt = 4
    tile_px: PosInt = 256
    split: Split = "train"


class Model(Strict):
    """Encoder choice shared by pretraining and fine-tuning."""

    encoder: EncoderName = "efficientnet_lite0"


class Params(Strict):
    """The whole ``params.yaml``."""

    seed: NonNegInt = 0
    paths: Paths = Paths()
    soi_mini: SoiMini = SoiMini()
    importers: Importers = Importers()
    preview: Preview = Preview()
    model: Model = Model()

    @field_validator("*", mode="before")
    @classmethod
    def _no_nan(cls, value: Any) -> Any:
        _reject_nan(value)
        return value


def _reject_nan(value: Any, key: str = "") -> None:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ValueError(f"{key or 'value'} must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_nan(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_nan(v, f"{key}[{i}]")


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message names file, key and rule."""


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} invalid value(s)"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml's documented keys)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a params mapping; raise :class:`ConfigError` with every problem listed."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Load, override (dotted keys, e.g. ``{"soi_mini.sardet.splits.train": 8}``) and validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return parse_params(data, str(path))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key == "a.b"``, creating mappings on the way."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def flatten(params: Params) -> dict[str, Any]:
    """Dotted-key view of the params (for tracking)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", params.model_dump(mode="json"))
    return out
