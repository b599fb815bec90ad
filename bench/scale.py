"""Cost of every data stage as the dataset grows: seconds, images/s and peak memory per size.

Usage (from the repository root; ~30 min for the default sizes on 2 cores)::

    .venv/bin/python bench/scale.py [--sizes 1000 5000 20000] [--work /tmp/babelrs-scale]
                                    [--plot docs/img/scale.png] [--json outputs/bench/scale.json]

For each size N (images in all, a third per dataset, in the three real formats) in a fresh work
folder: ``generate`` (SOI-mini's fast render mode), ``import``, ``validate`` (GX suites + image
checks), ``shard``, ``dvc push`` of the shards to a loopback S3 server (``moto_server`` on
127.0.0.1) and ``dvc pull`` into a fresh clone, the re-push after a one-image change (objects
pushed), and one epoch of the two training data loaders with no model: fine-tuning (every
training image through its source's mmcv pipeline: decode, resize, flips, pack) and pretraining
(instructions built and tokenised, every prompt of the training split collated once in batches).
Both loaders read the shards (``images.source: shards``) with the default ``images.cache_mb``.

Every stage runs in its own process, so its peak resident memory (``ru_maxrss`` of that child)
is its own. Prints a table per stage and size, the growth exponent ``k`` of time ~ N^k (a
least-squares fit over the sizes, log-log; fixed start-up costs such as importing torch pull it
below 1 at small sizes, so the slope between the two largest sizes is printed beside it) and of
peak memory, and writes a log-log PNG. A one-image change re-pushes three objects when the
shards are incremental: the changed shard, the index and DVC's listing of the folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
BUCKET = "babelrs-scale"

#: the measured stages, in order, and what an "image" is for their images/s
STAGES = (
    "generate",
    "import",
    "validate",
    "shard",
    "dvc push",
    "dvc pull",
    "finetune loader",
    "pretrain loader",
)


def split_sizes(n: int) -> dict[str, dict[str, int]]:
    """``n`` images in all, a third per dataset: 80/10/10 train/val/test (DOTA: 90/10)."""
    per = max(10, n // 3)
    val = max(1, per // 10)
    return {
        "sardet": {"train": per - 2 * val, "val": val, "test": val},
        "dota": {"train": per - val, "val": val},
        "dronevehicle": {"train": per - 2 * val, "val": val, "test": val},
    }


def overrides(work: Path, n: int) -> list[str]:
    """``--set`` options that put every path of the run under ``work`` and size the data."""
    sets = {
        "paths.raw": work / "data/raw",
        "paths.manifest": work / "data/manifest/scale.parquet",
        "validation.out_dir": work / "outputs/validation",
        "validation.data_docs": "false",
        "shards.dir": work / "data/shards",
        "shards.index": work / "data/shards/index.parquet",
        "images.source": "shards",
        "soi_mini.render": "fast",
    }
    for ds, splits in split_sizes(n).items():
        for split, count in splits.items():
            sets[f"soi_mini.{ds}.splits.{split}"] = count
    out: list[str] = []
    for key, value in sets.items():
        out += ["--set", f"{key}={value}"]
    return out


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd``; (seconds, peak RSS of the child in MB, output). Fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, out


def dvc_env(endpoint: str, home: Path) -> dict[str, str]:
    from tests.servers import aws_env

    env = aws_env(endpoint)
    env.update(
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(home / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(home / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(home / "dvc-site-cache"),
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def measure_size(n: int, work: Path, endpoint: str) -> dict[str, dict[str, float]]:
    """Every stage at size ``n``: {stage: {seconds, images_per_s, peak_mb, ...}}."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    sets = overrides(work, n)
    babelrs = [str(BIN / "babelrs")]
    rows: dict[str, dict[str, float]] = {}

    def record(name: str, cmd: list[str], cwd: Path = ROOT, env: dict | None = None) -> str:
        seconds, peak, out = timed(cmd, cwd, env)
        rows[name] = {"seconds": seconds, "images_per_s": n / seconds, "peak_mb": peak}
        print(f"  {name:<16} {seconds:8.1f} s {n / seconds:9.1f} img/s {peak:8.0f} MB", flush=True)
        return out

    record("generate", [*babelrs, "data", "generate", "-q", *sets])
    record("import", [*babelrs, "data", "import", *sets])
    record("validate", [*babelrs, "data", "validate", *sets])
    record("shard", [*babelrs, "data", "shard", *sets])

    # DVC: a git + DVC repository around the work folder, the shards pushed to loopback S3
    env = dvc_env(endpoint, work / "home")

    def run(*cmd: str, cwd: Path = work) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)

    run("git", "init", "-q")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "remote", "add", "-d", "s3", f"s3://{BUCKET}/n{n}")
    run(str(BIN / "dvc"), "remote", "modify", "s3", "endpointurl", endpoint)
    run(str(BIN / "dvc"), "add", "data/shards")
    record("dvc push", [str(BIN / "dvc"), "push", "-r", "s3"], work, env)
    clone = work.parent / f"{work.name}-clone"
    shutil.rmtree(clone, ignore_errors=True)
    clone.mkdir()
    for name in (".dvc/config", "data/shards.dvc"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / name, clone / name)
    run("git", "init", "-q", cwd=clone)
    record("dvc pull", [str(BIN / "dvc"), "pull", "-r", "s3"], clone, env)
    pulled = sorted(p.name for p in (clone / "data/shards").iterdir())
    assert pulled == sorted(p.name for p in (work / "data/shards").iterdir()), "pull differs"
    shutil.rmtree(clone)

    # one image changed: re-shard, re-add, re-push -> how many objects move
    first = sorted((work / "data/raw").rglob("*.png"))[0]
    with Image.open(first) as im:
        pixels = np.array(im)
    pixels.flat[0] ^= 0xFF
    Image.fromarray(pixels).save(first)
    subprocess.run([*babelrs, "data", "import", *sets], check=True, capture_output=True)
    subprocess.run([*babelrs, "data", "shard", *sets], check=True, capture_output=True)
    run(str(BIN / "dvc"), "add", "data/shards")
    t0 = time.perf_counter()
    out = run(str(BIN / "dvc"), "push", "-r", "s3").stdout.decode()
    rows["dvc push"]["repush_s"] = time.perf_counter() - t0
    rows["dvc push"]["repush_files"] = float(_pushed(out))
    print(f"  one-image change: {_pushed(out)} object(s) re-pushed", flush=True)

    here = [sys.executable, str(Path(__file__).resolve())]
    record("finetune loader", [*here, "--loader", "finetune", *sets])
    record("pretrain loader", [*here, "--loader", "pretrain", *sets])
    shutil.rmtree(work / "data/raw")  # the largest part; the next size starts fresh
    return rows


def _pushed(out: str) -> int:
    """Objects ``dvc push`` reports ("N files pushed"; "Everything is up to date." = 0)."""
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in ("file", "files") and words[2] == "pushed":
            return int(words[0])
    return 0


# -- the loaders, run in a child process ---------------------------------------------------------
def loader_epoch(kind: str, sets: list[str]) -> None:
    """One epoch of a training data loader over the params' image source (no model)."""
    from babelrs_core.config import load_params

    keys = dict(s.split("=", 1) for s in sets[1::2])
    params = load_params(ROOT / "params.yaml", keys)
    manifest = Path(params.paths.manifest)
    if kind == "finetune":
        from mmdet.registry import DATASETS
        from mmengine.registry import init_default_scope

        import babelrs_core.detector.model  # noqa: F401  (registers the transforms)
        from babelrs_core.detector.config import source_datasets

        init_default_scope("mmdet")
        for cfg in source_datasets(params, manifest):
            dataset = DATASETS.build(cfg)
            for i in range(len(dataset)):
                dataset[i]
        return
    from babelrs_core.pretrain.train import pivot_for, pretrain_data

    cfg = params.pretrain
    data = pretrain_data(params, manifest, pivot_for(params))
    steps = math.ceil(len(data.train) / cfg.batch_size)
    for step in range(steps):
        idx, flips, drops = data.draw(step, cfg.batch_size, params.seed)
        data.collate([data.train[i] for i in idx], flips=flips, drops=drops)


# -- report ---------------------------------------------------------------------------------------
def exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(size)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-9)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den if den else float("nan")


def report(results: dict[int, dict[str, dict[str, float]]]) -> str:
    from babelrs_core.io.markdown import table_head

    sizes = sorted(results)
    head = ["stage", *(f"{n:,} images: s / img/s / peak MB" for n in sizes)]
    lines = table_head([*head, "k (time)", "k (time, last two)", "k (peak MB)"])
    for stage in STAGES:
        cells = [
            f"{results[n][stage]['seconds']:.1f} / {results[n][stage]['images_per_s']:.0f} / "
            f"{results[n][stage]['peak_mb']:.0f}"
            for n in sizes
        ]
        k_t = exponent(sizes, [results[n][stage]["seconds"] for n in sizes])
        k_m = exponent(sizes, [results[n][stage]["peak_mb"] for n in sizes])
        k_2 = exponent(sizes[-2:], [results[n][stage]["seconds"] for n in sizes[-2:]])
        lines.append(f"| {stage} | {' | '.join(cells)} | {k_t:.2f} | {k_2:.2f} | {k_m:.2f} |")
    repush = ", ".join(
        f"{n:,}: {results[n]['dvc push']['repush_files']:.0f} objects in "
        f"{results[n]['dvc push']['repush_s']:.1f} s"
        for n in sizes
    )
    lines += ["", f"One image changed, then shard + `dvc push`: {repush}."]
    return "\n".join(lines)


def plot(results: dict[int, dict[str, dict[str, float]]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in STAGES:
        ax_t.plot(sizes, [results[n][stage]["seconds"] for n in sizes], "o-", label=stage)
        ax_m.plot(sizes, [results[n][stage]["peak_mb"] for n in sizes], "o-", label=stage)
    ref = [results[sizes[0]]["import"]["seconds"] * n / sizes[0] for n in sizes]
    ax_t.plot(sizes, ref, "k:", label="∝ N (k = 1)")
    for ax, title in ((ax_t, "seconds"), (ax_m, "peak resident memory, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("images")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/babelrs-scale"))
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/img/scale.png")
    parser.add_argument("--json", type=Path, default=ROOT / "outputs/bench/scale.json")
    parser.add_argument("--loader", choices=["finetune", "pretrain"], help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.loader:
        loader_epoch(args.loader, rest)
        return
    from tests.servers import s3_client, start_moto

    print(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}")
    results: dict[int, dict[str, dict[str, float]]] = {}
    args.work.mkdir(parents=True, exist_ok=True)
    with start_moto(log=args.work.parent / "moto.log") as s3:
        s3_client(s3.url).create_bucket(Bucket=BUCKET)
        for n in args.sizes:
            print(f"{n:,} images", flush=True)
            results[n] = measure_size(n, args.work / f"n{n}", s3.url)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    print()
    print(report(results))
    plot(results, args.plot)
    print(f"\nwrote {args.plot} and {args.json}")


if __name__ == "__main__":
    main()
