"""GPU check, detector rows: the fine-tuning stage on CUDA in fp32 / bf16 / fp16 per encoder start.

On a machine without the OpenMMLab stack (the lent GPU machine), this builds onedl-mmcv's CUDA ops
from the sdist in ``.gpuwheels/`` into ``.gpubuild/`` (git-ignored, ``build_ext --inplace``) in the
background while SOI-mini is generated and imported and ``ours`` is pretrained on CUDA (neither
needs mmcv), then fine-tunes the detector from each encoder start of the ablation (``ours``: CSIA
pretraining, ``imagenet``, ``scratch``) in each precision and, time permitting, evaluates each run.
Everything it finishes stays in ``.gpubuild/``: a second call on the still-warm machine resumes the
ninja build where it stopped and skips the steps already done. Per run it records it/s, peak GPU
memory, non-finite steps, the first non-finite iteration, the loss-scale trace (fp16), the final
loss and, when evaluated, mAP per dataset. It keeps its own deadline (``GPU_CHECK_DEADLINE``
seconds from ``GPU_CHECK_START``, default 500 s from its own start), skips what would not fit,
and rewrites ``$OUT/gpu_detector.json`` (+ ``$OUT/mmcv_build.log``, the build log's tail) after
every step, so a timeout still returns what finished.

    bash bench/gpu_detector.sh           # on the GPU machine, from the repo root

Environment: ``GPU_CHECK_INITS`` (ours,imagenet,scratch), ``GPU_CHECK_PRECISIONS``
(fp32,bf16,fp16), ``GPU_CHECK_ITERS`` (200, the ablation's), ``GPU_CHECK_PRETRAIN_STEPS`` (300),
``GPU_CHECK_EVAL`` (1: evaluate finished runs while time is left), ``GPU_CHECK_BUILD`` (auto:
build mmcv when ``mmcv._ext`` is missing; 0 never; 1 always), ``GPU_CHECK_DEVICE`` (cpu: a dry
run with a few images and iterations), ``GPU_CHECK_WORK`` (the work folder).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

import gpu_check
import torch

ROOT = gpu_check.ROOT
DEVICE = gpu_check.DEVICE
BUILD = ROOT / ".gpubuild"
WHEELS = ROOT / ".gpuwheels"
START = float(os.environ.get("GPU_CHECK_START") or time.time())
DEADLINE_S = float(os.environ.get("GPU_CHECK_DEADLINE", "500"))
#: seconds kept free at the end for writing the results and stopping the build
MARGIN_S = 12.0
#: what a fine-tuning run or an evaluation is assumed to take before one has been timed
FIRST_RUN_GUESS_S = float(os.environ.get("GPU_CHECK_RUN_GUESS", "45"))
LOG_TAIL_BYTES = 64_000


def elapsed() -> float:
    return time.time() - START


def left() -> float:
    return DEADLINE_S - elapsed()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"gpu_detector: signal {signum} at {elapsed():.0f} s")


class MmcvBuild:
    """onedl-mmcv's compiled ops (CUDA for this machine's architecture) built in the background
    with ``setup.py build_ext --inplace`` in ``.gpubuild/<sdist>/``: the objects and ninja's log
    stay there, so a rerun compiles only what is missing."""

    def __init__(self) -> None:
        sdists = sorted(WHEELS.glob("onedl_mmcv-*.tar.gz"))
        self.sdist = sdists[-1] if sdists else None
        self.src = BUILD / self.sdist.name.removesuffix(".tar.gz") if self.sdist else None
        self.log = BUILD / "mmcv_build.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0
        self.info: dict[str, Any] = {"status": "not needed"}

    def put_on_path(self) -> None:
        """The built tree goes first on ``sys.path`` (its ``onedl_mmcv.egg-info`` gives the
        distribution metadata): imports of ``mmcv`` find it, built or not yet."""
        if self.src is not None and self.src.is_dir() and str(self.src) not in sys.path:
            sys.path.insert(0, str(self.src))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.src), os.environ.get("PYTHONPATH")) if p
            )  # for the evaluation's worker processes

    def unpack(self) -> Path:
        assert self.sdist is not None and self.src is not None
        if not (self.src / "setup.py").exists():
            BUILD.mkdir(parents=True, exist_ok=True)
            with tarfile.open(self.sdist) as tar:
                tar.extractall(BUILD, filter="data")
            # biggest sources first: ninja starts the slow ones (filtered_lrelu.cu, cudabind.cpp)
            # early instead of leaving them to the end of a 140-file build (deterministic order,
            # so a rerun's build.ninja is the same and nothing recompiles)
            setup = self.src / "setup.py"
            text = setup.read_text()
            anchor = "            extension = CUDAExtension\n"
            if text.count(anchor) == 1:
                sort = "            op_files.sort(key=lambda f: (-os.path.getsize(f), f))\n"
                setup.write_text(text.replace(anchor, sort + anchor))
                self.info["sorted_sources"] = True
        return self.src

    def start(self) -> None:
        src = self.unpack()
        env = dict(os.environ)
        major, minor = torch.cuda.get_device_capability(0)
        nvcc = shutil.which("nvcc")
        if nvcc and "CUDA_HOME" not in env:
            env["CUDA_HOME"] = str(Path(nvcc).resolve().parents[1])
        flags = "-DNDEBUG -fwrapv -O1 -g0"  # CFLAGS replace the defaults: -O explicitly
        env.update(
            {
                "TORCH_CUDA_ARCH_LIST": env.get("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}"),
                "FORCE_CUDA": "1",
                "MMCV_WITH_OPS": "1",
                "MAX_JOBS": env.get("MAX_JOBS", str(os.cpu_count() or 4)),
                "CFLAGS": flags,
                "CXXFLAGS": flags,
                # -O1: host-side code of the .cu files (device code keeps ptxas's -O3). mmcv
                # hands MMCV_CUDA_ARGS to nvcc as ONE argument, so it holds one flag; the macro
                # that hushes CUDA 13's double4 / longlong4 deprecation (filtered_lrelu.cu) goes
                # through nvcc's own NVCC_APPEND_FLAGS
                "MMCV_CUDA_ARGS": env.get("MMCV_CUDA_ARGS", "-O1"),
                "NVCC_APPEND_FLAGS": env.get(
                    "NVCC_APPEND_FLAGS", "-D__NV_NO_VECTOR_DEPRECATION_DIAG"
                ),
            }
        )
        self.info = {
            "setuptools": self.setuptools_path(env),
            "status": "running",
            "arch": env["TORCH_CUDA_ARCH_LIST"],
            "max_jobs": env["MAX_JOBS"],
            "nvcc": nvcc,
            "resumed_objects": len(list(src.glob("build/temp*/**/*.o"))),
            "sorted_sources": self.info.get("sorted_sources", "earlier call"),
        }
        self.t0 = time.time()
        with self.log.open("ab") as log:
            log.write(f"\n==== build started at {elapsed():.0f} s ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                # niced: the data generation and the pretraining beside it keep their cores
                ["nice", "-n", "10", sys.executable, "setup.py", "build_ext", "--inplace"],
                cwd=src,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends ninja and nvcc too
            )

    def setuptools_path(self, env: dict[str, str]) -> str:
        """onedl-mmcv's pyproject.toml needs setuptools >= 77 (a PEP 639 license string): when
        the machine's is older, the wheel in ``.gpuwheels/build/`` goes first on the build's
        PYTHONPATH. Returns the version the build uses."""
        import setuptools

        version = setuptools.__version__
        if int(version.split(".")[0]) >= 77:
            return version
        wheels = sorted((WHEELS / "build").glob("setuptools-*.whl"))
        if not wheels:
            return f"{version} (too old, and no setuptools wheel in .gpuwheels/build/)"
        site = BUILD / "buildsite"
        if not (site / "setuptools").is_dir():
            with zipfile.ZipFile(wheels[-1]) as zf:
                zf.extractall(site)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
        return f"{version} -> {wheels[-1].name}"

    def poll(self) -> bool:
        """True when the build is over (or was never started)."""
        if self.proc is None:
            return True
        rc = self.proc.poll()
        if rc is None:
            return False
        self.proc = None
        self.info.update(status="ok" if rc == 0 else "failed", rc=rc)
        self.info["wall_s"] = round(time.time() - self.t0, 1)
        if rc != 0:
            self.info["errors"] = self.error_lines()
        return True

    def wait(self, need_s: float) -> bool:
        """Wait for the build while at least ``need_s`` seconds would be left after it."""
        while not self.poll():
            if left() < need_s + MARGIN_S:
                return False
            time.sleep(2)
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.info.update(status="stopped at the deadline (a second call resumes it)")
        self.info["wall_s"] = round(time.time() - self.t0, 1)
        assert self.src is not None
        self.info["objects_done"] = len(list(self.src.glob("build/temp*/**/*.o")))
        self.proc = None

    def error_lines(self) -> list[str]:
        if not self.log.exists():
            return []
        lines = self.log.read_text(errors="replace").splitlines()
        return [ln[:300] for ln in lines if "error" in ln.lower()][:30]

    def copy_tail(self, out: Path | None) -> None:
        if out is None or not self.log.exists():
            return
        with self.log.open("rb") as fh:
            fh.seek(max(0, self.log.stat().st_size - LOG_TAIL_BYTES))
            (out / "mmcv_build.log").write_bytes(fh.read())


def mmcv_ops_ready() -> bool:
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except ImportError:
        return False


def compress_trace(points: list[tuple[int, float]]) -> list[list[float]]:
    """``[iter, value]`` at the first point, at every change and at the last point."""
    out: list[list[float]] = []
    for i, (it, v) in enumerate(points):
        if not out or v != out[-1][1] or i == len(points) - 1:
            out.append([it, v])
    return out


class Check:
    def __init__(self, work: Path, out: Path | None) -> None:
        self.work, self.out = work, out
        self.state_path = work / "gpu_detector_state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )
        self.state.setdefault("rows", {})
        self.state.setdefault("evals", {})
        self.build = MmcvBuild()
        self.info: dict[str, Any] = {}
        self.skipped: list[dict[str, str]] = []
        self.timing: dict[str, float] = {}
        self.settings: dict[str, Any] = {}
        self.calls = int(self.state.get("calls", 0)) + 1
        self.state["calls"] = self.calls

    def save(self) -> None:
        self.state.setdefault("timing", {})[str(self.calls)] = self.timing
        self.state.setdefault("mmcv_build", {})[str(self.calls)] = self.build.info
        self.state_path.write_text(json.dumps(self.state, indent=1))
        report = {
            "device": self.info,
            "call": self.calls,
            "elapsed_s": round(elapsed(), 1),
            "deadline_s": DEADLINE_S,
            "settings": self.settings,
            "mmcv_build": self.state["mmcv_build"],  # per call
            "timing": self.state["timing"],  # per call
            "pretrain": self.state.get("pretrain"),
            "rows": list(self.state["rows"].values()),
            "evaluations": self.state["evals"],
            "skipped": self.skipped,
        }
        target = self.out or self.work
        (target / "gpu_detector.json").write_text(json.dumps(report, indent=2))
        self.build.copy_tail(self.out)

    def step(self, name: str, fn: Any, *args: Any) -> Any:
        t = time.time()
        try:
            return fn(*args)
        finally:
            self.timing[name] = round(time.time() - t, 1)
            self.save()


def finetune_params(base: dict[str, Any], start: str, precision: str, iters: int) -> Any:
    """The fine-tuning params of the ablation variant ``start`` (its ``init`` from
    ``ablation.variants``) at ``precision`` for ``iters`` iterations."""
    from babelrs_core.config import load_params

    params = load_params(
        ROOT / "params.yaml",
        {
            **base,
            "finetune.device": DEVICE,
            "finetune.precision": precision,
            "finetune.iters": iters,
            "finetune.log_every": 1,  # every iteration: the exact first non-finite step
            "finetune.val_every": 0,  # throughput of training alone
            "finetune.checkpoint_every": iters,
            "finetune.grad_cosine_every": 0,  # its extra backward passes would skew it/s
        },
    )
    params.finetune.init = params.ablation.variants[start].init
    return params


def finetune_row(
    base: dict[str, Any], init: str, precision: str, iters: int, work: Path, encoder: Path
) -> dict[str, Any]:
    from babelrs_core import stages
    from babelrs_core.ablation.rows import first_nonfinite
    from babelrs_core.detector.hooks import read_metrics

    params = finetune_params(base, init, precision, iters)
    out = work / f"finetune_{init}_{precision}"
    gpu_check._reset_peak()
    t = time.perf_counter()
    summary = stages.finetune(params, encoder=encoder, out=out, resume=False, progress=False)
    wall = time.perf_counter() - t
    history = read_metrics(out / "metrics.jsonl")
    steady = [h["s_per_iter"] for h in history[max(1, len(history) // 10) :] if h.get("s_per_iter")]
    scales = [(int(h["iter"]), float(h["loss_scale"])) for h in history if "loss_scale" in h]
    train_s = float(summary["timing"]["train_s"])
    return {
        "init": init,
        "finetune_init": params.finetune.init,
        "precision": precision,
        "iters": iters,
        "iters_per_s": round(iters / max(train_s, 1e-9), 2),
        "iters_per_s_steady": round(len(steady) / sum(steady), 2) if steady else None,
        "peak_mem_gib": gpu_check._peak_gib(),
        "nonfinite_steps": summary.get("nonfinite_steps"),
        "first_nonfinite": first_nonfinite(history),
        "loss_scale_trace": compress_trace(scales) if scales else None,
        "first_loss": summary.get("first_loss"),
        "final_loss": summary.get("final_loss"),
        "per_head_final": summary.get("per_head_final"),
        "build_s": summary["timing"]["build_s"],
        "train_s": round(train_s, 1),
        "wall_s": round(wall, 1),
        "out": str(out),
    }


def evaluate_row(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from babelrs_core import stages

    params = finetune_params(base, row["init"], row["precision"], row["iters"])
    t = time.perf_counter()
    ev = stages.evaluate(
        params, checkpoint=Path(row["out"]), out=Path(row["out"]) / "eval", progress=False
    )
    scores = {k: v for k, v in ev.items() if isinstance(v, dict) and "map" in v}
    return {
        "map": {k: v.get("map") for k, v in scores.items()},
        "ap50": {k: v.get("ap50") for k, v in scores.items()},
        "hmap": ev.get("overall", {}).get("hmap"),
        "wall_s": round(time.perf_counter() - t, 1),
    }


def run(check: Check) -> None:
    from babelrs_core import stages
    from babelrs_core.config import load_params

    work = check.work
    dry = DEVICE != "cuda"
    inits = os.environ.get("GPU_CHECK_INITS", "ours,imagenet,scratch").split(",")
    precisions = os.environ.get("GPU_CHECK_PRECISIONS", "fp32,bf16,fp16").split(",")
    iters = int(os.environ.get("GPU_CHECK_ITERS", "4" if dry else "200"))
    steps = int(os.environ.get("GPU_CHECK_PRETRAIN_STEPS", "4" if dry else "300"))
    base = gpu_check.base_overrides(work, os.environ.get("GPU_CHECK_LM", "tiny"))
    if dry:  # the evaluation scores sardet on its test split
        base["soi_mini.sardet.splits"] = {"train": 4, "val": 4, "test": 4}
    base["pretrain.eval_max_per_task"] = 20
    # DataLoader processes decoding + augmenting (params' default 0 would starve the GPU)
    base["images.loader_workers"] = int(
        os.environ.get("GPU_CHECK_LOADER_WORKERS", "0" if dry else "4")
    )
    check.settings = {
        "starts": inits,
        "precisions": precisions,
        "iters": iters,
        "pretrain_steps": steps,
        "loader_workers": base["images.loader_workers"],
        "language_model": base["pretrain.language_model"],
        "eval": os.environ.get("GPU_CHECK_EVAL", "1") != "0",
    }

    mode = os.environ.get("GPU_CHECK_BUILD", "auto")
    if check.build.sdist is not None and (mode == "1" or (mode == "auto" and DEVICE == "cuda")):
        check.build.unpack()
        check.build.put_on_path()  # a tree built by an earlier call imports at once
        if mode == "1" or not mmcv_ops_ready():
            check.build.start()
    check.save()

    if not check.state.get("data"):
        params = load_params(ROOT / "params.yaml", base)
        check.step("generate_s", stages.generate, params, None, False)
        check.step("import_s", stages.import_data, params, None, None, False)
        check.state["data"] = True
        check.save()
    encoder = work / "pretrain_fp32"
    if "ours" in inits and not check.state.get("pretrain"):
        row = check.step("pretrain_s", gpu_check.pretrain_run, base, "fp32", steps, work)
        check.state["pretrain"] = row
        print(json.dumps(row), flush=True)
        check.save()

    ready = check.build.wait(FIRST_RUN_GUESS_S)
    check.timing["mmcv_wait_until_s"] = round(elapsed(), 1)
    check.save()
    if not ready or not mmcv_ops_ready():
        reason = "mmcv build unfinished at the deadline" if not ready else "mmcv._ext missing"
        check.skipped.append({"what": "all fine-tuning runs", "why": reason})
        return

    walls: list[float] = []
    for init in inits:
        for precision in precisions:
            name = f"{init}_{precision}"
            if check.state["rows"].get(name, {}).get("iters") == iters:
                continue  # done in an earlier call
            need = max(walls) if walls else FIRST_RUN_GUESS_S
            if left() < need + MARGIN_S:
                check.skipped.append({"what": f"finetune {name}", "why": "deadline"})
                check.save()
                continue
            try:
                row = finetune_row(base, init, precision, iters, work, encoder)
                walls.append(row["wall_s"])
            except Exception as exc:  # record it and go on with the next run
                row = {
                    "init": init,
                    "precision": precision,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                    "traceback": traceback.format_exc()[-3000:],
                }
            check.state["rows"][name] = row
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
            check.save()

    if os.environ.get("GPU_CHECK_EVAL", "1") == "0":
        return
    eval_walls: list[float] = []
    for name, row in check.state["rows"].items():
        if "error" in row or name in check.state["evals"]:
            continue
        need = max(eval_walls) if eval_walls else FIRST_RUN_GUESS_S
        if left() < need + MARGIN_S:
            check.skipped.append({"what": f"evaluate {name}", "why": "deadline"})
            continue
        try:
            ev = evaluate_row(base, row)
            eval_walls.append(ev["wall_s"])
        except Exception as exc:
            ev = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        check.state["evals"][name] = ev
        print(json.dumps({"evaluate": name, **ev}), flush=True)
        check.save()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_detector: no CUDA device visible")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    default_work = BUILD / "work" if DEVICE == "cuda" else Path(tempfile.mkdtemp(prefix="gpu_"))
    work = Path(os.environ.get("GPU_CHECK_WORK") or default_work)
    work.mkdir(parents=True, exist_ok=True)
    check = Check(work, out)
    check.info = gpu_check.device_info() if DEVICE == "cuda" else {"gpu": "cpu dry run"}
    print(json.dumps({**check.info, "call": check.calls}), flush=True)
    try:
        run(check)
    finally:
        check.build.stop()
        check.timing["total_s"] = round(elapsed(), 1)
        check.save()
    rows = list(check.state["rows"].values())
    print(f"\n{'init':<10}{'prec':<6}{'it/s':>8}{'steady':>8}{'peak GiB':>10}{'non-fin':>9}"
          f"{'first':>7}{'final loss':>12}  mAP per dataset")  # fmt: skip
    for r in rows:
        ev = check.state["evals"].get(f"{r['init']}_{r['precision']}", {})
        maps = " ".join(f"{k}={v:.3f}" for k, v in (ev.get("map") or {}).items() if v is not None)
        if "error" in r:
            print(f"{r['init']:<10}{r['precision']:<6}  error: {r['error'][:70]}")
            continue
        print(f"{r['init']:<10}{r['precision']:<6}{r['iters_per_s']:>8}"
              f"{r['iters_per_s_steady']!s:>8}{r['peak_mem_gib']:>10}{r['nonfinite_steps']!s:>9}"
              f"{r['first_nonfinite']!s:>7}{r['final_loss']!s:>12.8}  {maps}")  # fmt: skip
    for s in check.skipped:
        print(f"skipped: {s['what']} ({s['why']})")
    print(
        f"mmcv build: {check.build.info.get('status')}; total {elapsed():.0f} s, call {check.calls}"
    )


if __name__ == "__main__":
    main()
