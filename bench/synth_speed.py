"""Benchmark SOI-mini generation: images/s of ``soi_mini.render`` full vs fast, per dataset.

Usage (from the repository root; the machine is shared, so be nice)::

    nice -n 10 .venv/bin/python bench/synth_speed.py [--images 300] [--full-images 30] \\
        [--params params.yaml] [--set KEY=VALUE ...]

For each mode and dataset it runs the real generator (:func:`generate_soi_mini`: rendering, image
and label files, scene graphs, the atomic swap into place) on that dataset alone (``--images``
images for fast mode, ``--full-images`` for full mode, shared among the dataset's splits as
``babelrs data generate --images-per-dataset`` does; the other datasets get none) into a temporary
folder, in this one process, and prints images/s by the wall clock and by this process's CPU time
side by side. Then it times the three datasets together in fast mode (``--images`` each), the
figure a scale test sees. Fast mode starts every measurement with no grounds made yet, so its
figures include making them (they are shared by every image of the same layout kind after).

Timings only print; no test asserts them (docs/soi_mini.md §7 has the measured figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from babelrs_core.config import Params, load_params
from babelrs_core.data.synth import fast
from babelrs_core.data.synth.generate import generate_soi_mini, with_images_per_dataset

DATASETS = ("sardet", "dota", "dronevehicle")


def only(params: Params, dataset: str | None, n: int, render: str) -> Params:
    """``params`` in ``render`` mode with ``n`` images of ``dataset`` (all datasets: None)."""
    p = with_images_per_dataset(params, n)
    p.soi_mini.render = render  # type: ignore[assignment]
    for other in DATASETS:
        if dataset is not None and other != dataset:
            spec = getattr(p.soi_mini, other)
            spec.splits = dict.fromkeys(spec.splits, 0)
    return p


def timed(params: Params) -> dict[str, Any]:
    """Generate into a temporary folder; images, objects, wall and CPU seconds."""
    fast._BANKS.clear()  # no grounds carried over from an earlier measurement
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        counts = generate_soi_mini(params, Path(tmp) / "raw", progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = sum(c["images"] for ds in counts.values() for c in ds.values())
    objects = sum(c["objects"] for ds in counts.values() for c in ds.values())
    return {"images": images, "objects": objects, "wall_s": wall, "cpu_s": cpu}


def _rate(r: dict[str, Any], key: str) -> str:
    return f"{r['images'] / r[key]:8.1f}" if r[key] > 0 and r["images"] else "       -"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="fast-mode images per dataset")
    ap.add_argument("--full-images", type=int, default=30, help="full-mode images per dataset")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, as babelrs --set")  # fmt: skip
    args = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    params = load_params(args.params, overrides)

    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    print(f"SOI-mini generation, one process, nice {os.nice(0)}, {os.cpu_count()} CPUs ({cpu}), "
          f"load average {load} at start")  # fmt: skip
    side = f"{'images':>12} {'wall img/s':>10} {'cpu img/s':>10}"
    print(f"{'':13} {'full:':>5}{side[5:]}   {'fast:':>5}{side[5:]}   {'x (cpu)':>7}")
    for ds in DATASETS:
        full = timed(only(params, ds, args.full_images, "full"))
        quick = timed(only(params, ds, args.images, "fast"))
        ratio = (quick["images"] / quick["cpu_s"]) / (full["images"] / full["cpu_s"])
        print(f"{ds:13} {full['images']:12d} {_rate(full, 'wall_s')}   {_rate(full, 'cpu_s')}   "
              f"{quick['images']:12d} {_rate(quick, 'wall_s')}   {_rate(quick, 'cpu_s')}   "
              f"{ratio:6.1f}x")  # fmt: skip
    total = timed(only(params, None, args.images, "fast"))
    print(f"all three, fast, {args.images} each: {total['images']} images, {total['objects']} "
          f"objects in {total['wall_s']:.1f} s wall / {total['cpu_s']:.1f} s CPU = "
          f"{total['images'] / total['wall_s']:.1f} img/s wall, "
          f"{total['images'] / total['cpu_s']:.1f} img/s CPU")  # fmt: skip


if __name__ == "__main__":
    main()
