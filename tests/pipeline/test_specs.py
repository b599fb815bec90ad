"""The stage specs: dvc.yaml generated from them, stage functions exist, cache keys are precise."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core import stages
from babelrs_core.config import load_params
from babelrs_core.io.hashing import path_hash
from babelrs_core.pipeline import PIPELINE, cache_key, params_subset, stage
from babelrs_core.pipeline.dvc import dvc_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_committed_dvc_yaml_is_generated_from_the_specs() -> None:
    expected = dvc_yaml(PIPELINE, load_params(ROOT / "params.yaml"))
    assert (ROOT / "dvc.yaml").read_text() == expected, "run `babelrs pipeline dvc-yaml`"


@pytest.mark.parametrize("spec", PIPELINE, ids=lambda s: s.name)
def test_every_spec_names_a_stage_function_code_and_params(spec) -> None:
    assert spec.func is getattr(stages, spec.func.__name__)  # a function of stages.py
    params = load_params(ROOT / "params.yaml")
    assert params_subset(params, spec.params)  # every key resolves
    for path in spec.code:
        assert (ROOT / path).exists(), path
    for template in (*spec.deps, *spec.outs, *spec.metrics, *spec.plots):
        assert "{" not in spec.resolve(template, params)


def test_unknown_stage_lists_the_stages() -> None:
    with pytest.raises(KeyError, match="stages: generate, import"):
        stage("pretrian")


def test_cache_key_tracks_only_the_stage_params_and_inputs(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("1")
    base = {"paths.raw": str(raw), "paths.manifest": str(tmp_path / "m.parquet")}
    params = load_params(ROOT / "params.yaml", base)
    spec = stage("import")
    key = cache_key(spec, params, path_hash)
    # a key the stage does not read: same key
    other = load_params(ROOT / "params.yaml", {**base, "soi_mini.sar.gsd_m": 2.0})
    assert cache_key(spec, other, path_hash) == key
    # a key it reads: new key
    changed = load_params(ROOT / "params.yaml", {**base, "importers.min_box_size_px": 2.0})
    assert cache_key(spec, changed, path_hash) != key
    # its input data changes: new key
    (raw / "a.txt").write_text("2")
    assert cache_key(spec, params, path_hash) != key


def test_path_hash_ignores_python_bytecode(tmp_path: Path) -> None:
    code = tmp_path / "pkg"
    code.mkdir()
    (code / "mod.py").write_text("X = 1\n")
    before = path_hash(code)
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (code / "stray.pyc").write_bytes(b"\x00")
    assert path_hash(code) == before
    (code / "mod.py").write_text("X = 2\n")  # the source itself still counts
    assert path_hash(code) != before
