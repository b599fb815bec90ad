"""The ``babelrs`` command line (typer). Every command is a thin wrapper over :mod:`stages`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from babelrs_core import __version__, stages
from babelrs_core.config import DEFAULT_PARAMS, ConfigError, Params, load_params

app = typer.Typer(
    help="babelrs: multi-sensor (SAR / RGB / IR) remote-sensing detectors with BabelRS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate, import and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params file (validated before any work)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="override a params key, e.g. --set soi_mini.sardet.splits.train=8"
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def _parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _params(path: Path, overrides: list[str] | None) -> Params:
    return load_params(path, _parse_overrides(overrides))


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@data_app.command("generate")
def data_generate(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="output root (default: paths.raw)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Render SOI-mini (SAR, RGB, IR scenes) in the real SARDet / DOTA / DroneVehicle formats."""
    p = _params(params, set_)
    _echo_json(stages.generate(p, out, progress=not quiet))


@data_app.command("import")
def data_import(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    sardet: Annotated[
        Path | None, typer.Option(help="SARDet-100K root (Annotations/, JPEGImages/)")
    ] = None,
    dota: Annotated[
        Path | None, typer.Option(help="DOTA v1.0 root ({split}/images, labelTxt)")
    ] = None,
    dronevehicle: Annotated[
        Path | None, typer.Option(help="DroneVehicle root ({split}/{split}imgr ...)")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="output manifest (default: paths.manifest)")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Import datasets into the manifest. Without dataset roots, imports SOI-mini from paths.raw."""
    p = _params(params, set_)
    given = {
        k: v for k, v in {"sardet": sardet, "dota": dota, "dronevehicle": dronevehicle}.items() if v
    }
    _echo_json(stages.import_data(p, given or None, manifest, progress=not quiet))


@data_app.command("preview")
def data_preview(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    manifest: Annotated[
        Path | None, typer.Option(help="manifest (default: paths.manifest)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: paths.preview)")] = None,
) -> None:
    """Write a PNG mosaic of samples per modality with their boxes drawn."""
    p = _params(params, set_)
    typer.echo(f"wrote {stages.preview(p, manifest, out)}")


def main() -> None:
    """Entry point with clean one-line errors for bad input (no tracebacks for user mistakes)."""
    try:
        app()
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
