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
from babelrs_core.errors import BabelrsError
from babelrs_core.io.atomic import DiskFullError
from babelrs_core.settings_env import read

DEBUG_ENV = "BABELRS_DEBUG"  # "1": errors keep their traceback (as babelrs --debug)
_STATE = {"debug": False}  # set by the --debug option

app = typer.Typer(
    help="babelrs: multi-sensor (SAR / RGB / IR) remote-sensing detectors with BabelRS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate, import and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
stage_app = typer.Typer(
    help="Run one pipeline stage (the same function dvc.yaml and the Prefect flow call).",
    no_args_is_help=True,
)
app.add_typer(stage_app, name="stage")
pipeline_app = typer.Typer(help="The pipeline as a whole.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

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
StudyOpt = Annotated[
    str | None,
    typer.Option(
        "--study",
        help="an ablation.studies entry (e.g. recipe): its variants, in a section of its own "
        "(= --set ablation.study=NAME)",
    ),
]


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


def _prefect_home() -> None:
    """Prefect creates only the last folder of its home (PREFECT_HOME); make the parents first."""
    home = read("PREFECT_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of errors (default: one line)")
    ] = False,
) -> None:
    if debug:
        _STATE["debug"] = True
    from babelrs_core.logs import configure_cli

    configure_cli(debug=debug or read(DEBUG_ENV) == "1")
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@data_app.command("generate")
def data_generate(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="output root (default: paths.raw)")] = None,
    images_per_dataset: Annotated[
        int | None,
        typer.Option(
            "--images-per-dataset",
            min=0,
            help="N images in each dataset, shared among its splits in proportion to "
            "soi_mini.<dataset>.splits (scale tests: with --set soi_mini.render=fast)",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Render SOI-mini (SAR, RGB, IR scenes) in the real SARDet / DOTA / DroneVehicle formats."""
    p = _params(params, set_)
    if images_per_dataset is not None:
        from babelrs_core.data.synth.generate import with_images_per_dataset

        p = with_images_per_dataset(p, images_per_dataset)
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


@data_app.command("validate")
def data_validate(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    manifest: Annotated[
        Path | None, typer.Option(help="manifest to check (default: paths.manifest)")
    ] = None,
    raw: Annotated[
        Path | None,
        typer.Option(help="check raw data instead: a root with SARDet_100K/ DOTA/ DroneVehicle/"),
    ] = None,
    sardet: Annotated[Path | None, typer.Option(help="check a raw SARDet-100K root")] = None,
    dota: Annotated[Path | None, typer.Option(help="check a raw DOTA v1.0 root")] = None,
    dronevehicle: Annotated[Path | None, typer.Option(help="check a raw DroneVehicle root")] = None,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default: validation.out_dir)")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Validate the manifest and its images (Great Expectations); exit 1 listing the offending
    files/rows if anything fails. With --raw/--sardet/--dota/--dronevehicle, validate raw
    dataset folders, malformed annotation files included."""
    from babelrs_core.data.layout import dataset_roots
    from babelrs_core.data.validation.report import DataValidationError

    p = _params(params, set_)
    roots: dict[str, Path] = {}
    if raw is not None:
        roots = {k: v for k, v in dataset_roots(raw).items() if v.is_dir()}
        if not roots:
            raise FileNotFoundError(f"{raw}: no SARDet_100K/, DOTA/ or DroneVehicle/ inside")
    given = {"sardet": sardet, "dota": dota, "dronevehicle": dronevehicle}
    roots.update({k: v for k, v in given.items() if v is not None})
    try:
        report = stages.validate(p, manifest, out, roots or None, progress=not quiet)
    except DataValidationError as exc:
        typer.echo(exc.report.markdown(), err=True)
        typer.secho(
            f"error: data validation failed ({len(exc.report.failures)} check(s)); "
            f"report in {out or p.validation.out_dir}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"data validation passed: {report['rows']} rows, {report['images']} images, "
        f"{report['checks']} checks; report in {out or p.validation.out_dir}"
    )


@data_app.command("shard")
def data_shard(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    manifest: Annotated[
        Path | None, typer.Option(help="manifest (default: paths.manifest)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="shard folder (default: shards.dir)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Pack the manifest's images into content-addressed tar shards + an index (for DVC)."""
    p = _params(params, set_)
    _echo_json(stages.shard(p, manifest, out, progress=not quiet))


remote_app = typer.Typer(help="DVC remotes (S3-compatible storage).", no_args_is_help=True)
data_app.add_typer(remote_app, name="remote")


@remote_app.command("bootstrap")
def data_remote_bootstrap(
    remote: Annotated[str, typer.Option(help="DVC remote name (an s3:// remote)")] = "s3",
    bucket: Annotated[
        str | None, typer.Option(help="bucket (default: $BABELRS_S3_BUCKET, then the config)")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="S3 endpoint URL (default: config, then $AWS_ENDPOINT_URL_S3)"),
    ] = None,
    save: Annotated[
        bool, typer.Option(help="write the resolved URL to .dvc/config.local (git-ignored)")
    ] = False,
) -> None:
    """Create the S3 remote's bucket if missing and check that it can be written and read.
    Credentials come from the AWS environment / profile; nothing secret is printed."""
    from babelrs_core.data.remote import RemoteError

    try:
        _echo_json(stages.remote_bootstrap(remote, bucket, endpoint, save))
    except RemoteError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


TrackOpt = Annotated[
    bool,
    typer.Option(
        "--track/--no-track",
        help="log an MLflow run (MLFLOW_TRACKING_URI, default: local store under outputs/mlflow)",
    ),
]


def _stage_command(name: str) -> None:
    from babelrs_core.pipeline import stage

    spec = stage(name)

    def command(
        params: ParamsOpt = DEFAULT_PARAMS,
        set_: SetOpt = None,
        quiet: QuietOpt = False,
        track: TrackOpt = True,
        parent_run_id: Annotated[
            str | None,
            typer.Option(
                envvar="BABELRS_PARENT_RUN_ID",
                help="MLflow run to nest this stage's run under (the pipeline's parent run)",
            ),
        ] = None,
        result_json: Annotated[
            Path | None, typer.Option(help="write the result here instead of printing it")
        ] = None,
        runner: Annotated[
            str, typer.Option(help="who runs the stage (lineage tag babelrs.runner; dvc.yaml: dvc)")
        ] = "cli",
    ) -> None:
        from babelrs_core import distributed as dist_util
        from babelrs_core.io.atomic import write_json
        from babelrs_core.pipeline.runner import execute_stage
        from babelrs_core.tracking import Tracker

        p = _params(params, set_)
        tracker = Tracker.from_params(p) if track and dist_util.is_main() else None
        result = execute_stage(
            spec, p, tracker=tracker, runner=runner, parent_run_id=parent_run_id, progress=not quiet
        )
        if not dist_util.is_main():
            return
        if result_json is not None:
            write_json(result_json, json.loads(json.dumps(result, default=str)))
        else:
            _echo_json(result)

    command.__doc__ = spec.help
    stage_app.command(name, help=spec.help)(command)


def _register_stages() -> None:
    from babelrs_core.pipeline import PIPELINE

    for spec in PIPELINE:
        _stage_command(spec.name)


_register_stages()


registry_app = typer.Typer(help="The MLflow model registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Option(help="model version to put through the gate")],
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Run the promotion gate for one registered version (registry.* in params.yaml); exit 0
    whether or not it is promoted, printing the decision and its numbers."""
    from babelrs_core.registry.registry import promote
    from babelrs_core.tracking import default_tracking_uri

    p = _params(params, set_)
    cfg = p.registry
    decision = promote(cfg.model_name, version, cfg, default_tracking_uri(p.tracking.store))
    _echo_json({"version": version, **decision.as_tags()})


@app.command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, TIFF, JPEG, ...)")],
    model: Annotated[
        str, typer.Option(help="MLflow model URI")
    ] = "models:/babelrs-detector@champion",
    modality: Annotated[str, typer.Option(help="sar | rgb | ir (or a dataset name)")] = "sar",
    out: Annotated[Path, typer.Option(help="folder for detections.csv / .json")] = Path(
        "outputs/predict"
    ),
    score_thr: Annotated[float, typer.Option(help="drop detections below this score")] = 0.0,
    overlays: Annotated[bool, typer.Option(help="also write <image>.overlay.png")] = False,
    overlay_thr: Annotated[float, typer.Option(help="least score drawn on overlays")] = 0.3,
) -> None:
    """Detect objects with a registered model (MLFLOW_TRACKING_URI, default the local store):
    writes detections.csv and detections.json (GeoJSON-like, pixel coordinates)."""
    from babelrs_core.registry.consumer import predict_files

    _echo_json(predict_files(model, images, modality, out, score_thr, overlays, overlay_thr))


ablation_app = typer.Typer(
    help="The encoder-start ablation (ablation.* in params.yaml, docs/ablation.md).",
    no_args_is_help=True,
)
app.add_typer(ablation_app, name="ablation")


@ablation_app.command("run")
def ablation_run(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    study: StudyOpt = None,
    track: TrackOpt = True,
) -> None:
    """Pretrain the variants, fine-tune every variant x precision x seed (equal compute), evaluate,
    and regenerate the "Ablation" section of docs/results.md with its PNGs, through the
    babelrs-ablation Prefect flow (ephemeral Prefect unless PREFECT_API_URL is set). Finished runs
    are reused, interrupted ones resume; exit 1 if any run failed (the report lists it)."""
    from babelrs_core.ablation.report import SUMMARY_JSON
    from babelrs_core.ablation.run import AblationError, get_runner

    overrides = _ablation_overrides(study, set_)
    p = load_params(params, overrides)  # fail fast, before Prefect starts or anything is written
    run = get_runner("prefect")
    _prefect_home()
    try:
        summary = run(str(params), overrides or None, track)
    except AblationError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo("\n".join(summary["statements"]))
    typer.echo(f"wrote {p.ablation.results_md} and {p.ablation.report_dir / SUMMARY_JSON}")


def _ablation_overrides(study: str | None, items: list[str] | None) -> dict[str, Any]:
    """``--study NAME`` (= ``ablation.study=NAME``) and the ``--set`` overrides, which win."""
    return ({} if study is None else {"ablation.study": study}) | _parse_overrides(items)


@ablation_app.command("report")
def ablation_report(
    params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None, study: StudyOpt = None
) -> None:
    """Regenerate the ablation's section and PNGs from the outputs of earlier runs."""
    from babelrs_core.ablation.run import report_ablation

    p = load_params(params, _ablation_overrides(study, set_))
    summary = report_ablation(p)
    typer.echo("\n".join(summary["statements"]))


@ablation_app.command("plan")
def ablation_plan(
    params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None, study: StudyOpt = None
) -> None:
    """Print the runs the ablation would do (nothing runs)."""
    from babelrs_core.ablation.plan import build_plan

    p = load_params(params, _ablation_overrides(study, set_))
    _echo_json(build_plan(p).describe())


results_app = typer.Typer(help="The generated sections of docs/results.md.", no_args_is_help=True)
app.add_typer(results_app, name="results")


@results_app.command("pretrain")
def results_pretrain(
    metrics: Annotated[Path, typer.Argument(help="a pretraining run's metrics.json")] = Path(
        "outputs/pretrain/metrics.json"
    ),
    doc: Annotated[Path, typer.Argument(help="markdown file to update")] = Path("docs/results.md"),
    note: Annotated[str, typer.Option(help="a sentence on where / how the run was made")] = "",
) -> None:
    """Write the "Pretraining (CSIA + LVSA)" section of DOC from a run's metrics.json (replacing
    the section if DOC has one, else appending it); prints DOC."""
    from babelrs_core.pretrain.results_section import update_results_doc

    typer.echo(update_results_doc(metrics, doc, note))


@pipeline_app.command("dvc-yaml")
def pipeline_dvc_yaml(
    params: ParamsOpt = DEFAULT_PARAMS,
    out: Annotated[Path, typer.Option(help="file to write")] = Path("dvc.yaml"),
    check: Annotated[bool, typer.Option(help="exit 1 if the file differs instead")] = False,
) -> None:
    """Write dvc.yaml from the stage specs in babelrs_core/pipeline/specs.py (one source of
    truth)."""
    from babelrs_core.io.atomic import write_text
    from babelrs_core.pipeline import PIPELINE
    from babelrs_core.pipeline.dvc import dvc_yaml

    text = dvc_yaml(PIPELINE, load_params(params))
    if check:
        if not out.exists() or out.read_text() != text:
            typer.secho(f"{out} is out of date: run `babelrs pipeline dvc-yaml`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out} is up to date")
        return
    write_text(out, text)
    typer.echo(f"wrote {out}")


@pipeline_app.command("run")
def pipeline_run(
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="run only these stages (repeatable)")
    ] = None,
    track: TrackOpt = True,
    runner: Annotated[
        str,
        typer.Option(
            help="prefect: the babelrs-retrain flow (ephemeral Prefect unless "
            "PREFECT_API_URL is set); local: in this process, no orchestrator"
        ),
    ] = "prefect",
) -> None:
    """Run the whole pipeline (or --stage ...), then print the summary table."""
    from babelrs_core.pipeline.runners import get_runner
    from babelrs_core.summary import render_summary

    overrides = _parse_overrides(set_)
    load_params(params, overrides)  # fail fast, before Prefect starts or anything is written
    run = get_runner(runner)
    _prefect_home()
    results = run(str(params), overrides or None, stage or None, track)
    render_summary(results)


@pipeline_app.command("stages")
def pipeline_stages() -> None:
    """List the stages in order with what they read and write."""
    from babelrs_core.pipeline import PIPELINE

    for spec in PIPELINE:
        gpu = " [gpu]" if spec.gpu else ""
        typer.echo(f"{spec.name:<10}{gpu:<6} {spec.help}")
        typer.echo(f"{'':16} params: {', '.join(spec.params)}")


@app.command("env")
def env(params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None) -> None:
    """Print shell `export` lines for the model's consumers (MLFLOW_TRACKING_URI: the one set,
    else the local store of tracking.store); use: eval "$(babelrs env)". Never prints secrets."""
    from babelrs_core.shell_env import shell_env

    result = shell_env(_params(params, set_).tracking.store)
    for note in result.notes:
        typer.echo(f"babelrs env: {note}", err=True)
    typer.echo(result.text(), nl=False)


def main() -> None:
    """Entry point with clean one-line errors for bad input (no tracebacks for user mistakes;
    ``babelrs --debug ...`` or ``BABELRS_DEBUG=1`` shows them)."""
    try:
        app()
    except (BabelrsError, FileNotFoundError, ValueError) as exc:
        if _STATE["debug"] or read(DEBUG_ENV) == "1":
            raise
        message = exc.strerror if isinstance(exc, DiskFullError) else exc
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        # our errors carry their exit status; a library's bad-input error is a usage error (2)
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
