"""The ablation plan from params: equal compute, shared pretraining, fp16 on CPU; bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from babelrs_core import stages
from babelrs_core.ablation.plan import FinetuneJob, Plan, ablation_params, build_plan
from babelrs_core.config import ConfigError, captions_beside, load_params
from babelrs_core.io.hashing import file_sha256

ROOT = Path(__file__).resolve().parents[2]


def test_default_plan_on_cpu_probes_fp16_and_keeps_compute_equal() -> None:
    params = load_params(ROOT / "params.yaml")
    plan = build_plan(params, device="cpu")
    assert [j.name for j in plan.pretrains] == ["ours", "last_layer", "tau0", "no_language"]
    assert plan.pretrain_job("last_layer").params.pretrain.lvsa.mode == "last"
    assert plan.pretrain_job("tau0").params.pretrain.lvsa.tau == 0
    assert plan.pretrain_job("ours").params.pretrain.lvsa.mode == "lvsa"
    full = [j for j in plan.finetunes if j.mode == "full" and j.compute is None]
    probes = [j for j in plan.finetunes if j.mode == "probe"]
    assert len(full) == 6 * 3 and {j.precision for j in full} == {"fp32"}
    assert len(probes) == 6 and {(j.precision, j.seed) for j in probes} == {("fp16", 0)}
    assert {j.params.finetune.iters for j in probes} == {params.ablation.probe_iters}
    # equal compute: every full run has the same fine-tuning params but init and seed
    shapes = set()
    for j in full:
        ft = j.params.finetune.model_dump(mode="json")
        ft.pop("init")
        shapes.add(repr(sorted(ft.items())))
    assert len(shapes) == 1
    assert {j.params.finetune.iters for j in full} == {params.ablation.iters}
    assert {j.seed for j in full} == set(params.ablation.seeds)
    assert {j.variant: j.pretrain for j in full}["imagenet"] is None
    assert {j.variant: j.params.finetune.init for j in full}["scratch"] == "scratch"
    assert len({j.out for j in plan.all_finetunes()}) == len(plan.all_finetunes())


def test_plan_on_a_gpu_runs_fp16_in_full_and_skip_drops_it() -> None:
    params = load_params(ROOT / "params.yaml")
    gpu = build_plan(params, device="cuda")
    variants = [j for j in gpu.finetunes if j.compute is None]
    assert len(variants) == 6 * 2 * 3 and {j.mode for j in gpu.finetunes} == {"full"}
    # imagenet_long runs at every precision imagenet runs in full
    assert len(gpu.finetunes) - len(variants) == 2 * 3
    skip = build_plan(load_params(ROOT / "params.yaml", {"ablation.cpu_fp16": "skip"}), "cpu")
    assert len([j for j in skip.finetunes if j.compute is None]) == 18
    assert {(s["variant"], s["precision"]) for s in skip.skipped} == {
        (v, "fp16") for v in params.ablation.variants
    }


def test_variants_with_the_same_pretraining_share_one_run() -> None:
    params = load_params(
        ROOT / "params.yaml",
        {
            "ablation.variants.ours_again": {"label": "again", "init": "csia"},
            "ablation.variants.tau0.pretrain": {"lvsa.tau": 0, "steps": 50},
        },
    )
    plan = build_plan(params, device="cpu")
    assert plan.pretrain_job("ours").variants == ("ours", "ours_again")
    assert plan.pretrain_job("tau0").params.pretrain.steps == 50
    assert {j.pretrain for j in plan.finetunes if j.variant == "ours_again"} == {"ours"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ablation.seeds": [0]}, "at least two distinct seeds"),
        ({"ablation.seeds": [1, 1]}, "at least two distinct seeds"),
        ({"ablation.expected_order": ["ours", "nope"]}, "unknown variants ['nope']"),
        ({"ablation.precisions": ["fp32", "fp8"]}, "ablation.precisions.1"),
        ({"ablation.variants.tau0.pretrain": {"lvsa.tauu": 0}}, "tau0.pretrain: lvsa.tauu"),
        ({"ablation.variants.tau0.pretrain": {"lvsa.tau": -1}}, "tau0.pretrain: lvsa.tau"),
        ({"ablation.variants.imagenet.pretrain": {"steps": 5}}, "pretrain overrides need init"),
        ({"ablation.variants.ours.finetune": {"iters": 5}}, "set by the ablation plan"),
        ({"ablation.variants.ours.init": "mae"}, "ablation.variants.ours.init"),
        ({"ablation.variants.Bad_Name": {"label": "x", "init": "scratch"}}, "Bad_Name"),
        ({"ablation.iters": 0}, "ablation.iters"),
        ({"ablation.cpu_fp16": "maybe"}, "ablation.cpu_fp16"),
        (
            {"ablation.study": "nope"},
            "study 'nope': not one of ablation.studies (recipe, recipe_long)",
        ),
        ({"ablation.studies.recipe.seedz": [0, 1]}, "studies.recipe: keys ['seedz']"),
        ({"ablation.studies.recipe.studies": {}}, "studies.recipe: keys ['studies']"),
        ({"ablation.studies.recipe.seeds": [0]}, "studies.recipe: seeds [0]: at least two"),
        (
            {"ablation.studies.recipe.variants.lm_frozen.pretrain": {"freeze.lm_layerz": 0}},
            "studies.recipe: ablation.variants.lm_frozen.pretrain: freeze.lm_layerz",
        ),
    ],
)
def test_invalid_ablation_params_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", overrides)
    assert "params.yaml" in str(err.value)
    assert message in str(err.value)


def test_a_study_shares_runs_and_data_but_reports_apart() -> None:
    params = load_params(ROOT / "params.yaml")
    study = load_params(ROOT / "params.yaml", {"ablation.study": "recipe"})
    ab = study.ablation
    assert list(ab.variants) == ["ours", "pretrain_128", "lm_frozen", "previous"]
    assert ab.section != params.ablation.section and ab.plots_dir != params.ablation.plots_dir
    assert ab.report_dir == params.ablation.out_root / "studies" / "recipe"
    main, recipe = build_plan(params, device="cpu"), build_plan(study, device="cpu")
    assert recipe.params.paths.manifest == main.params.paths.manifest  # the same data
    # `ours` is the same job in both, so a study reuses the ablation's finished runs
    mine = {j.key: j for j in main.finetunes if j.variant == "ours" and j.precision == "fp32"}
    theirs = {j.key: j for j in recipe.finetunes if j.variant == "ours"}
    assert mine.keys() == theirs.keys()
    for key, job in mine.items():
        assert theirs[key].out == job.out
        assert _run_fingerprint(theirs[key], recipe) == _run_fingerprint(job, main)
    assert recipe.pretrain_job("ours").fingerprint() == main.pretrain_job("ours").fingerprint()
    small = recipe.pretrain_job("pretrain_128").params.pretrain
    assert (small.image_size, small.lvsa.grid) == (128, params.pretrain.lvsa.grid)
    frozen = recipe.pretrain_job("lm_frozen").params.pretrain.freeze
    assert (frozen.lm_embeddings, frozen.lm_layers) == (True, 4)
    old = recipe.pretrain_job("previous").params.pretrain
    assert (old.image_size, old.freeze.lm_layers) == (128, 4)
    assert {j.precision for j in recipe.finetunes} == {"fp32"}
    assert not recipe.label_runs and all(j.compute is None for j in recipe.finetunes)
    # a longer study keeps runs of its own: iterations are not in a run's fingerprint
    long = build_plan(load_params(ROOT / "params.yaml", {"ablation.study": "recipe_long"}), "cpu")
    assert {j.params.finetune.iters for j in long.finetunes} == {900}
    assert long.root != main.root and not {j.out for j in long.finetunes} & {
        j.out for j in main.finetunes
    }


def _run_fingerprint(job: FinetuneJob, plan: Plan) -> dict:
    from babelrs_core.detector.train import fingerprint

    return fingerprint(job.params, plan.manifest, None)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "babelrs_core.cli", "ablation", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


def test_cli_plan_prints_the_runs_and_bad_params_exit_2(tmp_path: Path) -> None:
    out = _cli("plan", "--set", "ablation.cpu_fp16=skip", "--set", "finetune.device=cpu")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    # 6 variants x 3 seeds + imagenet_long x 3 + 3 label variants x 2 fractions x 2 seeds
    assert len(plan["finetune"]) == 18 + 3 + 12 and len(plan["skipped"]) == 6
    assert sorted(plan["pretrain"]) == ["last_layer", "no_language", "ours", "tau0"]
    root = tmp_path / "ab"
    bad = _cli("run", "--set", "ablation.seeds=[3]", "--set", f"ablation.out_root={root}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "ablation" in bad.stderr and "at least two distinct seeds" in bad.stderr
    assert not root.exists(), "nothing may be written for invalid params"


def test_the_ablation_evaluates_on_its_own_larger_split_never_trained_on(tmp_path: Path) -> None:
    tiny = {
        "ablation.out_root": str(tmp_path / "ab"),
        "ablation.eval_images": 3,
        "soi_mini.render": "fast",
        "paths.raw": str(tmp_path / "pipeline" / "raw"),
        "soi_mini.sardet.splits": {"train": 2, "val": 1, "test": 2},
        "soi_mini.dota.splits": {"train": 2, "val": 2},
        "soi_mini.dronevehicle.splits": {"train": 1, "val": 1, "test": 1},
    }
    params = load_params(ROOT / "params.yaml", tiny)
    ab = ablation_params(params)
    assert ab.soi_mini.sardet.splits == {"train": 2, "val": 1, "test": 3}
    assert ab.soi_mini.dota.splits == {"train": 2, "val": 3}  # DOTA is scored on val
    assert ab.soi_mini.dronevehicle.splits == {"train": 1, "val": 1, "test": 3}
    data = tmp_path / "ab" / "data"
    assert ab.paths.manifest == data / "manifest.parquet" and ab.paths.raw == data / "raw"
    assert ab.paths.captions == captions_beside(ab.paths.manifest)
    assert ablation_params(ab) == ab, "idempotent"
    plan = build_plan(params, device="cpu")
    assert plan.manifest == ab.paths.manifest and plan.params == ab
    assert {j.params.paths.manifest for j in plan.all_finetunes()} == {ab.paths.manifest}
    assert {j.params.finetune.val_every for j in plan.all_finetunes()} == {0}
    as_is = load_params(ROOT / "params.yaml", {**tiny, "ablation.eval_images": 0})
    assert ablation_params(as_is) == as_is
    # every image drawn from its own seeded generator: the training splits are the pipeline's,
    # byte for byte, and the pipeline's evaluation images are the first of the larger split
    stages.generate(params, progress=False)
    stages.generate(ab, progress=False)
    ours = {p.relative_to(params.paths.raw): p for p in params.paths.raw.rglob("*") if p.is_file()}
    theirs = {p.relative_to(ab.paths.raw): p for p in ab.paths.raw.rglob("*") if p.is_file()}
    train = [r for r in ours if "train" in str(r).lower()]
    assert train and all(file_sha256(ours[r]) == file_sha256(theirs[r]) for r in train)
    images = [r for r in ours if r.suffix in (".png", ".jpg", ".tif", ".tiff")]
    assert images and all(file_sha256(ours[r]) == file_sha256(theirs[r]) for r in images)
    assert len(theirs) > len(ours)
