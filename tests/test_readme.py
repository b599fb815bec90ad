"""README.md's consumer section is a script that works: its fenced blocks between
``<!-- readme-test:consumer -->`` and ``<!-- /readme-test -->`` are read from README.md at test
time and run as written, in a throw-away folder laid out as a clone after ``make run``.

The "pipeline run" is the tests' tiny detector (one fine-tuning iteration on their fake data),
evaluated by the real evaluation stage and registered by the real ``register`` stage into the
folder's ``outputs/mlflow`` store, its gate floor set by a params override: 0 (version 1 becomes
the champion) or out of reach (no champion). The folder has ``.venv`` (a link to this checkout's),
``params.yaml`` and, at the README's own image path, a synthetic SAR image at the tiny head's
input size. The one substitution in the README text: its port 5001 becomes a free loopback port.
The shell gets a ``PATH`` without the virtualenv (what ``babelrs env`` adds is what makes
``uvicorn`` findable), no ``MLFLOW_TRACKING_URI``, and ``PYTHONPATH`` = this checkout (an installed
clone imports itself; this one may share its virtualenv with another checkout).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"<!-- readme-test:consumer -->\n(.*?)<!-- /readme-test -->", re.S)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
README_PORT = "5001"
NAME = "babelrs-detector"


def consumer_blocks() -> dict[str, str]:
    """The bash and the python block of the README's consumer section."""
    (section,) = SECTION.findall((ROOT / "README.md").read_text())
    blocks = FENCE.findall(section)
    assert [lang for lang, _ in blocks] == ["bash", "python"], blocks
    return dict(blocks)


def test_consumer_section_is_marked_and_uses_babelrs_env() -> None:
    blocks = consumer_blocks()
    bash = blocks["bash"]
    assert bash.splitlines()[0] == 'eval "$(.venv/bin/babelrs env)"'  # once, before the rest
    assert "mlflow models serve -m models:/babelrs-detector@champion" in bash
    assert "curl -s -X POST" in bash and "babelrs predict" in bash
    assert 'mlflow.pyfunc.load_model("models:/babelrs-detector@champion")' in blocks["python"]
    assert bash.count(README_PORT) == 3  # serve -p, /ping, /invocations: all substituted
    assert len(re.findall(r"^scene=(\S+)", bash, re.M)) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny detector and its evaluation (params overrides shared by every registration)."""
    import torch

    from babelrs_core.evaluation.report import run_evaluation
    from bench.serving_load import synthetic_images, tiny_detector
    from tests.detector.det_fakes import FAKE, tiny_params

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("readme-tiny")
    ckpt = tiny_detector(root)  # the same overrides as below: root/finetune
    over: dict[str, object] = {"finetune.init": "scratch", "finetune.iters": 1,
                               "finetune.warmup_iters": 1}  # fmt: skip
    for ds in FAKE:
        over |= {f"finetune.heads.{ds}.score_thr": 0.0, f"finetune.heads.{ds}.max_per_img": 5}
    run_evaluation(tiny_params(root, **over))
    return {"root": root, "over": over, "sar": synthetic_images(ckpt)["sar"][0]}


def make_clone(tiny_run: dict, folder: Path, floor: float) -> Path:
    """``folder`` as a clone after ``make run``: its store holds version 1 of the tiny detector,
    put through the gate with ``registry.floor`` = ``floor``."""
    from PIL import Image

    from babelrs_core.registry.registry import register
    from tests.detector.det_fakes import tiny_params

    folder.mkdir(parents=True)
    (folder / ".venv").symlink_to(ROOT / ".venv")
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    scene = re.search(r"^scene=(\S+)", consumer_blocks()["bash"], re.M)[1]
    (folder / scene).parent.mkdir(parents=True)
    # as large as a real SOI-mini SAR image (noise does not compress): its base64 is longer than
    # one command-line argument may be, as the README's request must cope with
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    Image.fromarray(noise).save(folder / scene)
    assert (folder / scene).stat().st_size * 4 / 3 > 131072  # Linux MAX_ARG_STRLEN
    params = tiny_params(tiny_run["root"], **tiny_run["over"], **{
        "tracking.store": str(folder / "outputs" / "mlflow"), "registry.floor": floor,
        "registry.out_dir": str(folder / "outputs" / "registry")})  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = register(params)
    assert result["version"] == "1" and result["promoted"] == (floor == 0.0)
    return folder


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    venv_bins = {str((ROOT / ".venv" / "bin").resolve()), str(ROOT / ".venv" / "bin")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(p for p in path if str(Path(p).resolve()) not in venv_bins
                                  and p not in venv_bins)  # fmt: skip
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_script(argv: list[str], cwd: Path, log: Path, stdin: str = "", timeout: float = 240):
    """Run ``argv`` in its own session with output to files. (rc, stdout, stderr, left): ``left``
    is True when a process of the session (the background server) was still running 20 s after
    ``argv`` ended; it is then stopped with its process group."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    left = False
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(argv, cwd=cwd, env=shell_env(), stdin=subprocess.PIPE, stdout=fo,
                                stderr=fe, start_new_session=True)  # fmt: skip
        try:
            proc.communicate(stdin.encode(), timeout=timeout)
            deadline = time.monotonic() + 20
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            left = _group_alive(proc.pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not _group_alive(proc.pid):
                    break
                os.killpg(proc.pid, sig)
                time.sleep(5)
            proc.wait(10)
    return proc.returncode, out.read_text(), err.read_text(), left


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def bash_block(port: int) -> str:
    return consumer_blocks()["bash"].replace(README_PORT, str(port))


def python_argv() -> list[str]:
    """The README's python block, run by ``.venv/bin/python`` in a shell that ran the block's
    first line (``eval "$(.venv/bin/babelrs env)"``), as the README says."""
    first = consumer_blocks()["bash"].splitlines()[0]
    return ["bash", "-c", f"{first}\nexec .venv/bin/python -"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_readme_consumer_section_runs_as_written(tiny_run: dict, tmp_path: Path) -> None:
    clone = make_clone(tiny_run, tmp_path / "clone", floor=0.0)
    port = free_port()
    rc, out, err, left = run_script(["bash", "-e", "-o", "pipefail", "-c", bash_block(port)],
                                    clone, tmp_path / "bash")  # fmt: skip
    assert not left, "the README's `kill $server` left the server (or a worker) running"
    assert rc == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    assert "Traceback" not in err, err[-5000:]
    # stdout: babelrs predict's summary (indented JSON) and curl's answer (one JSON line), among
    # what OpenMMLab prints on import and the server's access log
    summary, _ = json.JSONDecoder().raw_decode(out, re.search(r"^\{$", out, re.M).start())
    answer = json.loads(re.findall(r'^\{"predictions".*$', out, re.M)[-1])
    assert summary["model_uri"] == f"models:/{NAME}@champion" and summary["detections"] >= 1
    predict_dir = clone / "outputs" / "predict"
    assert (predict_dir / "detections.csv").is_file()
    assert (predict_dir / "000057.overlay.png").is_file()
    rows = answer["predictions"]
    assert rows and {r["modality"] for r in rows} == {"sar"} and all("score" in r for r in rows)
    rc, out, err, left = run_script(python_argv(), clone, tmp_path / "python",
                              stdin=consumer_blocks()["python"])  # fmt: skip
    assert rc == 0, err[-5000:]
    assert "Traceback" not in err
    header = next(line for line in out.splitlines() if "class_name" in line)
    assert header.split() == ["class_name", "score", "x1", "y1", "x2", "y2"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_a_champion_the_section_stops_with_one_line(tiny_run: dict, tmp_path: Path) -> None:
    clone = make_clone(tiny_run, tmp_path / "clone", floor=1e6)  # version 1 rejected
    rc, out, err, left = run_script(["bash", "-e", "-o", "pipefail", "-c",
                                     bash_block(free_port())], clone, tmp_path / "bash",
                                    timeout=120)  # fmt: skip
    assert rc == 1 and not left, (out, err)
    assert "Traceback" not in err, err
    assert (f"error: models:/{NAME}@champion: no version of '{NAME}' has the alias 'champion' "
            "(aliases: @challenger -> 1)") in err  # fmt: skip
    assert "version 1: gate rejected (first version: H-mAP" in err
    assert "--model models:/babelrs-detector/1" in err
    assert out == ""  # stopped at babelrs predict: no server was started, no curl ran
    # the python block: MLflow's own exception (load_model is MLflow's API), not a hang
    rc, out, err, _ = run_script(python_argv(), clone, tmp_path / "python",
                                 stdin=consumer_blocks()["python"], timeout=120)  # fmt: skip
    assert rc == 1 and "champion" in err.strip().splitlines()[-1], err[-3000:]
