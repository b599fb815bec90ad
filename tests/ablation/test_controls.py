"""The ablation's controls: the no-language variant, imagenet_long's iterations decided from the
runs' recorded time (equal total compute), the label-efficiency runs, their table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babelrs_core.ablation import compute
from babelrs_core.ablation.label_efficiency import (
    label_efficiency_rows,
    label_efficiency_table,
    plot_label_efficiency,
)
from babelrs_core.ablation.plan import Plan, build_plan
from babelrs_core.config import ConfigError, load_params
from tests.images import assert_png

ROOT = Path(__file__).resolve().parents[2]


def _plan(tmp: Path, **overrides: object) -> Plan:
    manifest = tmp / "ab" / "data" / "manifest.parquet"  # the ablation's own SOI-mini
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.touch()  # AblationRun makes the data only when the manifest is missing
    where = {"ablation.out_root": str(tmp / "ab")}
    params = load_params(ROOT / "params.yaml", {**where, **overrides})
    return build_plan(params, device="cpu")


def test_default_plan_has_the_controls(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    nl = plan.pretrain_job("no_language")
    assert nl.params.pretrain.objective == "classification" and nl.variants == ("no_language",)
    assert plan.pretrain_job("ours").params.pretrain.objective == "language"
    # imagenet_long: the imagenet start, fp32 (fp16 is only probed on CPU), iterations pending
    long = [j for j in plan.finetunes if j.variant == "imagenet_long"]
    assert [(j.precision, j.seed) for j in long] == [("fp32", 0), ("fp32", 1), ("fp32", 2)]
    assert all(j.pending and j.pretrain is None for j in long)
    assert {j.params.finetune.init for j in long} == {"imagenet"}
    assert long[0].compute is not None and long[0].compute.pretrain == "ours"
    assert long[0].compute.measured == tuple(f"imagenet/fp32/seed{k}" for k in range(3))
    # label efficiency: 3 variants x (0.1, 0.25) x the first label_seeds (2) seeds; only
    # DroneVehicle subsampled
    runs = plan.label_runs
    assert len(runs) == 12 and {j.mode for j in runs} == {"full"}
    assert {j.seed for j in runs} == {0, 1}
    assert {(j.variant, j.label_fraction) for j in runs} == {
        (v, f) for v in ("ours", "no_language", "imagenet") for f in (0.1, 0.25)}  # fmt: skip
    for j in runs:
        assert j.params.finetune.label_fraction == {
            "sardet": 1.0, "dota": 1.0, "dronevehicle": j.label_fraction}  # fmt: skip
        assert j.params.finetune.iters == plan.params.ablation.iters
        assert j.out.parts[-4:-2] == ("label_efficiency", f"{j.variant}@dronevehicle-"
                                      f"{j.label_fraction:g}")  # fmt: skip
    assert {j.variant: j.pretrain for j in runs} == {
        "ours": "ours", "no_language": "no_language", "imagenet": None}  # fmt: skip
    keys = [j.key for j in plan.all_finetunes()]
    assert len(set(keys)) == len(keys) and "ours@dronevehicle-0.1/fp32/seed0" in keys
    # the fingerprints differ from the full-label runs (own folders, no reuse across fractions)
    from babelrs_core.detector.train import fingerprint

    ours = next(j for j in plan.finetunes if j.key == "ours/fp32/seed0")
    tenth = next(j for j in runs if j.key == "ours@dronevehicle-0.1/fp32/seed0")
    assert fingerprint(ours.params, plan.manifest, None) != fingerprint(
        tenth.params, plan.manifest, None
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ablation.label_variants": ["ours", "nope"]}, "label_variants: unknown variants"),
        ({"ablation.label_fractions": [0.1, 1.5]}, "ablation.label_fractions.1"),
        ({"ablation.compute_controls.imagenet_long.variant": "ours"}, "without pretraining"),
        ({"ablation.compute_controls.imagenet_long.pretrain_of": "scratch"}, "a csia variant"),
        (
            {
                "ablation.compute_controls.ours": {
                    "label": "x",
                    "variant": "imagenet",
                    "pretrain_of": "ours",
                }
            },
            "a new name",
        ),
        ({"ablation.variants.ours.finetune": {"label_fraction.dota": 0.5}}, "set by the ablation"),
        ({"finetune.label_fraction.dota": 0}, "finetune.label_fraction.dota"),
    ],
)
def test_invalid_control_params_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"params\.yaml") as err:
        load_params(ROOT / "params.yaml", overrides)
    assert message in str(err.value)


def test_extra_iterations_round_half_up() -> None:
    assert compute.extra_iters(300.0, 1.2) == 250
    assert compute.extra_iters(10.0, 4.0) == 3  # 2.5 -> 3
    assert compute.extra_iters(0.0, 1.0) == 0
    with pytest.raises(ValueError):
        compute.extra_iters(10.0, 0.0)


def _pretrained(out: Path, cpu_s: float, wall_s: float, ran: int, steps: int = 150) -> None:
    out.mkdir(parents=True, exist_ok=True)
    timing = {"train_cpu_s": cpu_s, "train_s": wall_s, "steps_this_run": ran}
    (out / "metrics.json").write_text(json.dumps({"steps": steps, "timing": timing}))


def _finetuned(ft: Path, cpu: list[float], wall: float = 9.0, done: bool = True) -> None:
    ft.mkdir(parents=True, exist_ok=True)
    lines = [{"iter": i + 1, "cpu_s_per_iter": c, "s_per_iter": wall} for i, c in enumerate(cpu)]
    (ft / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if done:
        (ft / "train.json").write_text(json.dumps({"iters": 200}))


def test_imagenet_long_iterations_from_the_recorded_cpu_time(tmp_path: Path) -> None:
    plan = _plan(tmp_path, **{"ablation.seeds": [0, 1]})
    # pretraining resumed at step 50: 100 steps took 200 CPU s -> 300 s for its 150 steps
    _pretrained(plan.pretrain_job("ours").out, cpu_s=200.0, wall_s=999.0, ran=100)
    runs = {j.key: j for j in plan.finetunes}
    _finetuned(runs["imagenet/fp32/seed0"].finetune_dir, [50.0, 1.1, 1.1])  # first window: start
    _finetuned(runs["imagenet/fp32/seed1"].finetune_dir, [50.0, 1.3], done=False)
    long = next(j for j in plan.finetunes if j.key == "imagenet_long/fp32/seed0")
    assert compute.measure(plan, long) is None, "an unfinished run is not measured"
    _finetuned(runs["imagenet/fp32/seed1"].finetune_dir, [50.0, 1.3])
    m = compute.measure(plan, long)
    assert m is not None
    assert m["clock"] == "cpu" and m["pretrain_s"] == 300.0 and m["s_per_iter"] == 1.2
    assert (m["extra_iters"], m["iters"]) == (250, 450)
    # a plan built once the inputs exist is decided already (what the report reads back)
    again = build_plan(plan.params, device="cpu")
    decided = [j for j in again.finetunes if j.variant == "imagenet_long"]
    assert {j.params.finetune.iters for j in decided} == {450} and not decided[0].pending
    # on a GPU the wall clock prices both sides
    gpu = build_plan(plan.params, device="cuda")
    g = next(j for j in gpu.finetunes if j.key == "imagenet_long/fp32/seed0")
    assert g.measured is not None and g.measured["clock"] == "wall"
    assert g.measured["extra_iters"] == 167  # 999 s x 150 / 100 steps / 9 s = 166.5, half up


def test_the_run_submits_imagenet_long_once_its_inputs_ran_and_records_why(
    tmp_path: Path,
) -> None:
    from babelrs_core.ablation.run import AblationRun

    plan = _plan(tmp_path, **{"ablation.seeds": [0, 1]})
    with AblationRun(plan.params, track=False, device="cpu", log=lambda s: None) as run:
        plan = run.plan
        assert run.deferred_to_run() == []
        pre = plan.pretrain_job("ours")
        _pretrained(pre.out, cpu_s=120.0, wall_s=150.0, ran=150)
        run.done(pre, {}, 0.0)
        assert run.deferred_to_run() == [], "the imagenet runs have not run yet"
        for seed in (0, 1):
            job = next(j for j in plan.finetunes if j.key == f"imagenet/fp32/seed{seed}")
            _finetuned(job.finetune_dir, [9.0, 1.0, 1.0])
            run.done(job, {}, 0.0)
        todo = run.deferred_to_run()
        assert [j.key for j in todo] == ["imagenet_long/fp32/seed0", "imagenet_long/fp32/seed1"]
        assert {j.params.finetune.iters for j in todo} == {200 + 120}
        assert run.deferred_to_run() == [], "submitted once"
        saved = json.loads((todo[0].out / compute.COMPUTE_JSON).read_text())
        assert saved["extra_iters"] == 120 and saved["measured_runs"] == [
            "imagenet/fp32/seed0", "imagenet/fp32/seed1"]  # fmt: skip
        assert run.finetune_args(todo[0])["params_json"]["finetune"]["iters"] == 320


def test_ready_jobs_start_pretrainings_then_inputs_then_longest_first(tmp_path: Path) -> None:
    """The flow starts the ready job first in this order, so the workers finish together."""
    from babelrs_core.ablation.run import AblationRun

    plan = _plan(tmp_path, **{"ablation.seeds": [0, 1]})
    with AblationRun(plan.params, track=False, device="cpu", log=lambda s: None) as run:
        plan = run.plan
        key = {j.key: j for j in plan.all_finetunes()}
        ready = [
            key["ours/fp16/seed0"],  # a probe
            key["scratch/fp32/seed1"],
            key["imagenet/fp32/seed0"],  # imagenet_long is measured on it
            plan.pretrain_job("no_language"),
            plan.pretrain_job("ours"),
        ]
        assert key["ours/fp16/seed0"].mode == "probe"
        order = [getattr(j, "key", getattr(j, "name", "")) for j in sorted(ready, key=run.priority)]
        assert order == [
            "ours", "no_language", "imagenet/fp32/seed0", "scratch/fp32/seed1", "ours/fp16/seed0"
        ]  # fmt: skip
        # a decided compute control (more iterations) goes before the 200-iteration runs
        _pretrained(plan.pretrain_job("ours").out, cpu_s=120.0, wall_s=150.0, ran=150)
        run.done(plan.pretrain_job("ours"), {}, 0.0)
        for seed in (0, 1):
            _finetuned(key[f"imagenet/fp32/seed{seed}"].finetune_dir, [9.0, 1.0, 1.0])
            run.done(key[f"imagenet/fp32/seed{seed}"], {}, 0.0)
        long = run.deferred_to_run()[0]
        assert sorted([key["scratch/fp32/seed1"], long], key=run.priority)[0] is long
        # once decided, imagenet's runs are no longer inputs of a pending control
        assert run.priority(key["imagenet/fp32/seed0"]) == run.priority(key["scratch/fp32/seed1"])


def test_a_failed_input_fails_the_control(tmp_path: Path) -> None:
    from babelrs_core.ablation.run import AblationRun

    plan = _plan(tmp_path)
    with AblationRun(plan.params, track=False, device="cpu", log=lambda s: None) as run:
        run.failed(run.plan.pretrain_job("ours"), RuntimeError("boom"), 0.0)
        assert run.deferred_to_run() == []
        assert "compute measurement failed: ours" in run.errors["imagenet_long/fp32/seed0"]


def _evaluated(job_dir: Path, dv_map: float) -> None:
    target = job_dir / "eval" / "metrics" / "eval.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"dronevehicle": {"map": dv_map, "ap50": 2 * dv_map}}))


def test_label_efficiency_rows_and_plot(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    score = {"ours": 30.0, "no_language": 25.0, "imagenet": 20.0}
    for j in [*plan.finetunes, *plan.label_runs]:
        if j.variant in score and j.precision == "fp32" and j.mode == "full":
            _evaluated(j.out, score[j.variant] * j.label_fraction + j.seed)
    rows = label_efficiency_rows(plan)
    assert [(r["variant"], r["fraction"]) for r in rows] == [
        (v, f) for v in ("ours", "no_language", "imagenet") for f in (0.1, 0.25, 1.0)]  # fmt: skip
    top = next(r for r in rows if (r["variant"], r["fraction"]) == ("ours", 1.0))
    assert top["map"]["values"] == {"0": 30.0, "1": 31.0} and top["map"]["mean"] == 30.5
    assert top["map"]["spread"] == 0.5 and top["ap50"]["mean"] == 61.0
    assert top["seeds"] == [0, 1] and top["runs"] == 2 and top["dataset"] == "dronevehicle"
    low = next(r for r in rows if (r["variant"], r["fraction"]) == ("imagenet", 0.1))
    assert low["map"]["mean"] == pytest.approx(2.5) and "label_efficiency" in low["out"][0]
    json.dumps(rows)  # what ablation_run.json holds
    png = plot_label_efficiency(rows, tmp_path / "img" / "label_efficiency.png")
    assert png is not None
    assert_png(png)
    table = label_efficiency_table(rows).splitlines()
    assert table[0] == "| dronevehicle mAP vs share of its training labels | 10% | 25% | 100% |"
    assert table[2].endswith("| 3.50 ± 0.50 | 8.00 ± 0.50 | 30.50 ± 0.50 |")  # ours
    assert len(table) == 5 and table[4].startswith("| ImageNet")
    empty = label_efficiency_rows(_plan(tmp_path / "other"))
    assert label_efficiency_table(empty).splitlines()[2].endswith("| – | – | – |")
    assert all(r["map"]["mean"] is None for r in empty)
    assert plot_label_efficiency(empty, tmp_path / "none.png") is None
