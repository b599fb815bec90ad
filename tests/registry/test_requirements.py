"""The logged pyfunc model's pip requirements are complete: every distribution that the model code
imports while loading and predicting (measured in a fresh interpreter) is listed, pinned to the
version installed here. Optional imports of the listed libraries themselves (mmengine imports
transformers when it is installed, torch pydot...) are theirs to guard and need no listing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params

torch.set_num_threads(1)

#: a fresh interpreter loads the logged model from its folder and predicts its input example while
#: recording, for every import, the top-level package imported and the module importing it; it
#: prints the pairs whose importer is the model code (``babelrs_core``) and every top-level
#: module loaded
PROBE = """
import builtins, json, sys

direct = set()
_import = builtins.__import__


def _top(name):
    return name.split(".")[0]


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    caller = (globals or {}).get("__name__") or ""
    if level == 0 and _top(caller) == "babelrs_core":
        direct.add(_top(name))
    return _import(name, globals, locals, fromlist, level)


class FirstImporter:  # importlib.import_module calls bypass __import__
    def find_spec(self, name, path=None, target=None):
        if "." not in name and name not in sys.modules:
            frame = sys._getframe(1)
            while frame is not None and _top(frame.f_globals.get("__name__", "")) in (
                "importlib", "_frozen_importlib", "_frozen_importlib_external"
            ):
                frame = frame.f_back
            if frame is not None and _top(frame.f_globals.get("__name__", "")) == "babelrs_core":
                direct.add(name)
        return None


builtins.__import__ = recording_import
sys.meta_path.insert(0, FirstImporter())
import mlflow.pyfunc
from mlflow.models import Model

path = sys.argv[1]
model = mlflow.pyfunc.load_model(path)
out = model.predict(Model.load(path).load_input_example(path))
assert list(out.columns)[:2] == ["image_index", "image_id"], out.columns
loaded = sorted({m.split(".")[0] for m in sys.modules})
print("PROBE=" + json.dumps({"direct": sorted(direct), "loaded": loaded}))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration tiny detector logged as the pyfunc model to a local store; its folder."""
    import mlflow

    from babelrs_core.detector.train import run_finetune
    from babelrs_core.registry.pyfunc import log_detector_model
    from babelrs_core.tracking import fluent_tracking_uri

    root = tmp_path_factory.mktemp("pyfunc-requirements")
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    params = tiny_params(root, **{"finetune.iters": 2, "finetune.warmup_iters": 1})
    run_finetune(params)
    with fluent_tracking_uri(f"sqlite:///{root / 'mlflow.db'}"):
        exp = mlflow.create_experiment("req", artifact_location=(root / "art").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_detector_model(params.paths.finetune_out)
        local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model"))
    return Path(local)


def test_requirements_list_every_distribution_the_model_imports(logged_model: Path) -> None:
    lines = [ln.strip() for ln in (logged_model / "requirements.txt").read_text().splitlines()]
    pinned = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    listed = {_norm(n) for n in pinned}
    for name, version in pinned.items():  # pinned to what is installed here
        assert metadata.version(name) == version, name

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # babelrs_core: model code
    proc = subprocess.run([sys.executable, "-c", PROBE, str(logged_model)], capture_output=True,
                          text=True, env=env, cwd=logged_model, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.split("PROBE=", 1)[1])
    providers = metadata.packages_distributions()

    def dists(mod: str) -> set[str]:
        """The installed distributions providing top-level module ``mod`` (none: stdlib or the
        model code itself, which travels with the model as code)."""
        if mod in sys.stdlib_module_names:
            return set()
        return {_norm(d) for d in providers.get(mod, [])} - {"babelrs"}

    direct = {mod: dists(mod) for mod in probe["direct"] if dists(mod)}
    # what the detector needs at load / predict time is imported by the model code itself
    assert {"mmcv", "mmengine", "mmdet", "mmrotate", "torch", "safetensors", "numpy"} <= set(direct)
    assert set(direct) <= set(probe["loaded"])
    missing = {mod: sorted(d) for mod, d in direct.items() if not d & listed}
    print("imported by the model code:", {m: sorted(d) for m, d in direct.items()})
    assert not missing, f"imported by the model code but not in requirements.txt: {missing}"
