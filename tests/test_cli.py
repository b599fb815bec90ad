"""The `babelrs` command line: help everywhere, import + preview on real-format fixtures, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from babelrs_core.cli import app
from babelrs_core.data.manifest import read_manifest
from tests.fixtures import make_fixtures
from tests.images import assert_png

ROOT = Path(__file__).resolve().parents[1]
BABELRS = Path(sys.executable).with_name("babelrs")

runner = CliRunner()


def _commands(typer_app) -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(typer_app)
    out: list[list[str]] = [[]]

    def walk(cmd, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            out.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(group, [])
    return out


@pytest.mark.parametrize("argv", _commands(app), ids=lambda a: " ".join(a) or "babelrs")
def test_every_command_has_help(argv: list[str]) -> None:
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_import_and_preview_real_format_fixtures(tmp_path: Path) -> None:
    roots = make_fixtures.materialize_all(tmp_path / "raw")
    manifest = tmp_path / "m" / "manifest.parquet"
    args = ["data", "import", "--quiet", "--manifest", str(manifest)]
    for name, root in roots.items():
        args += [f"--{name}", str(root)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    frame = read_manifest(manifest)
    assert report["rows"] == len(frame)
    assert set(frame["modality"]) == {"sar", "rgb", "ir"}
    png = tmp_path / "preview.png"
    result = runner.invoke(
        app, ["data", "preview", "--manifest", str(manifest), "--out", str(png),
              "--set", "preview.tile_px=64", "--set", "preview.per_modality=2"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # one row per dataset present in the train split, two 64-px tiles each (after a 120-px label
    # column, 6-px gaps); every tile shows an image (the fixtures are flat grey with drawn boxes;
    # a non-square one is letterboxed), not the mosaic's background
    pixels = assert_png(png, size=(120 + 2 * (64 + 6), 3 * (64 + 6) + 6), min_colours=50)
    for row in range(3):
        for col in range(2):
            y, x = 6 + row * 70, 120 + col * 70
            tile = pixels[y : y + 64, x : x + 64, :3].reshape(-1, 3)
            shown = (tile != pixels[0, 0, :3]).any(axis=1).mean()
            assert shown > 0.5 and len(np.unique(tile, axis=0)) >= 2, (png, row, col, shown)


def test_bad_params_exit_2_with_key_named(tmp_path: Path) -> None:
    argv = ["data", "generate", "--set", "model.encoder=alexnet", "--out", str(tmp_path)]
    out = subprocess.run([str(BABELRS), *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "model.encoder" in out.stderr and "efficientnet_lite0" in out.stderr
    assert "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written for invalid params"


def test_malformed_annotation_exit_2_naming_file_and_line(tmp_path: Path) -> None:
    root = make_fixtures.materialize("dota", tmp_path / "raw")
    label = root / "train" / "labelTxt" / "P0000.txt"
    label.write_text(label.read_text() + "10 10 20 10 20 20 plane 0\n")
    bad_line = len(label.read_text().splitlines())  # the line just appended
    manifest = tmp_path / "manifest.parquet"
    out = subprocess.run(
        [str(BABELRS), "data", "import", "-q", "--dota", str(root), "--manifest", str(manifest)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"{label}:{bad_line}: expected 10 fields" in out.stderr, out.stderr
    assert not manifest.exists()
