"""Serving under load: ``mlflow models serve`` answering ``POST /invocations`` to concurrent
clients; prints one markdown table (throughput, latency percentiles, errors, server peak RSS).

The docs table (docs/benchmarks.md, "Serving under load"), on a quiet machine after ``make run``
(the shipped detector in ``outputs/finetune``, images from the manifest's evaluation splits)::

    .venv/bin/python bench/serving_load.py --workers 1 2 --write-docs docs/benchmarks.md

A quick check with the tiny detector of the tests (a few seconds of load)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/serving_load.py --tiny \\
        --requests 20 --threads 1

For each ``--workers`` value the bench starts ``mlflow models serve -m URI --env-manager local
-h 127.0.0.1 -p <free port> --workers N`` (its own process group, the server's torch threads per
worker set by ``--threads``), waits for ``/ping`` (deadline ``--start-timeout``), sends a few
warm-up requests, then for each ``--clients`` level runs that many threads, each with its own
keep-alive HTTP connection, sending one request after the other until the level has sent
``--requests`` requests or ``--duration`` seconds have passed. Every request is one image (the
modalities in turn) as ``dataframe_split`` JSON with the PNG bytes base64-encoded
(``babelrs_core.registry.payload.json_payload``, the body README.md shows with curl). Errors: a
status other than 200, a connection failure or timeout, or an answer whose ``predictions`` rows do
not match the logged model's output schema (checked after the level, outside the timing).
Peak RSS: the server's whole process tree (the ``mlflow`` CLI, ``uvicorn`` and its workers),
sampled every 0.25 s during the level (psutil when installed, else ``/proc``).

The model: ``--model URI`` (with ``MLFLOW_TRACKING_URI`` for ``models:/`` URIs); otherwise the
detector in ``--checkpoint`` (default ``paths.finetune_out``) or, when it does not exist, one of the
configured size made by one fine-tuning iteration from scratch on the manifest
(``bench/serving.py``), or with ``--tiny`` (or without a manifest) the tiny detector of the tests on
their fake data; it is logged and registered (``babelrs-detector`` version 1) in a throw-away
local MLflow store and served from there. Images: the manifest's evaluation splits when it exists
(as ``bench/serving.py``), else synthetic square images at each head's input size.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTION = "## Serving under load (mlflow models serve)"
NAME = "babelrs-detector"
LEVELS = (1, 4, 16)
BIN = Path(sys.executable).parent


# -- the model --------------------------------------------------------------------------------


def tiny_detector(root: Path) -> Path:
    """The tests' tiny detector (``tests/detector/det_fakes.py``: 64 px, 16 channels) after one
    iteration from scratch on their fake data, exported to ``root/finetune``. Its heads keep every
    score (``score_thr`` 0) and at most 5 boxes per image: each image yields rows to check."""
    from babelrs_core.detector.train import run_finetune
    from tests.detector.det_fakes import FAKE, make_fake_manifest, tiny_params

    root.mkdir(parents=True, exist_ok=True)
    manifest = make_fake_manifest(root)
    over: dict[str, object] = {"finetune.init": "scratch", "finetune.iters": 1,
                               "finetune.warmup_iters": 1}  # fmt: skip
    for ds in FAKE:
        over |= {f"finetune.heads.{ds}.score_thr": 0.0, f"finetune.heads.{ds}.max_per_img": 5}
    run_finetune(tiny_params(root, **over), manifest, resume=False)
    return root / "finetune"


def register_in_store(detector_dir: Path, store: Path) -> tuple[str, str]:
    """Log ``detector_dir`` as the pyfunc model into a local MLflow store under ``store`` and
    register it as ``babelrs-detector`` version 1; return (tracking URI, model URI). MLflow's
    process-wide tracking URI is left as it was."""
    import mlflow

    from babelrs_core.registry.pyfunc import log_detector_model
    from babelrs_core.tracking import fluent_tracking_uri

    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with fluent_tracking_uri(uri):
        exp = mlflow.create_experiment("bench-serving-load", (store / "art").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_detector_model(detector_dir)
        version = mlflow.register_model(info.model_uri, NAME)
    return uri, f"models:/{NAME}/{version.version}"


def output_schema(model_uri: str, tracking_uri: str | None = None) -> list[tuple[str, str]]:
    """(column, MLflow type) of the model's logged output signature; ``tracking_uri`` for
    ``models:/`` URIs (default: ``MLFLOW_TRACKING_URI``)."""
    from mlflow.models import get_model_info

    from babelrs_core.tracking import fluent_tracking_uri

    ctx = fluent_tracking_uri(tracking_uri) if tracking_uri else contextlib.nullcontext()
    with ctx:
        sig = get_model_info(model_uri).signature
    if sig is None or sig.outputs is None:
        raise ValueError(f"{model_uri}: no output signature")
    return [(c.name, c.type.name) for c in sig.outputs.inputs]


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "long": (int,), "integer": (int,), "double": (float, int), "float": (float, int),
    "string": (str,), "boolean": (bool,),
}  # fmt: skip


def check_predictions(body: bytes, schema: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The ``predictions`` rows of an ``/invocations`` answer; ``ValueError`` when it does not
    parse or a row lacks / adds a column or has a value of the wrong type (NaN is a double)."""
    try:
        rows = json.loads(body)["predictions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"answer does not parse: {exc}; {body[:200]!r}") from None
    if not isinstance(rows, list):
        raise ValueError(f"predictions is a {type(rows).__name__}, not a list")
    names = [n for n, _ in schema]
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or sorted(row) != sorted(names):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"row {i}: columns {got}, expected {sorted(names)}")
        for name, kind in schema:
            value = row[name]
            ok = isinstance(value, _PY_TYPES[kind]) and not (
                isinstance(value, bool) and kind != "boolean"
            )
            if not ok:
                raise ValueError(f"row {i}: {name}={value!r} is not a {kind}")
    return rows


# -- request bodies ---------------------------------------------------------------------------


def synthetic_images(detector_dir: Path, seed: int = 0) -> dict[str, list[Any]]:
    """One synthetic square image per modality of the detector, at that head's input size
    (grey noise with bright squares; RGB with three different bands)."""
    import numpy as np

    from babelrs_core.detector.checkpoint import read_detector_json

    _, info = read_detector_json(detector_dir)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Any]] = {}
    for d in info["datasets"].values():
        modality = d["modality"]
        size = int(info["modalities"][modality]["image_size"])
        img = np.full((size, size), 90, np.uint8) + rng.integers(0, 25, (size, size), np.uint8)
        for _ in range(4):
            w = max(4, size // 8)
            x, y = rng.integers(0, size - w, 2)
            img[y : y + w, x : x + w] = 240
        out[modality] = [np.stack([img, img // 2 + 60, 255 - img], -1) if modality == "rgb"
                         else img]  # fmt: skip
    return out


def request_bodies(
    images: dict[str, list[Any]], params: dict[str, Any] | None = None
) -> list[bytes]:
    """One JSON body per image (``dataframe_split``, one row), modalities interleaved."""
    from babelrs_core.registry.payload import input_frame, json_payload

    bodies: list[bytes] = []
    for i in range(max(map(len, images.values()), default=0)):
        for modality, arrays in images.items():
            if i < len(arrays):
                frame = input_frame([arrays[i]], modality, [f"{modality}-{i}"])
                bodies.append(json.dumps(json_payload(frame, params)).encode())
    if not bodies:
        raise ValueError("no images to send")
    return bodies


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 once it is gone)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _proc_tree_rss(pid: int) -> int:
    """:func:`tree_rss` from ``/proc`` (Linux, no psutil)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(statm[1]) * page
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


class RssSampler:
    """Peak :func:`tree_rss` of ``pid`` sampled every ``every_s`` seconds in a thread."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.peak = max(self.peak, tree_rss(self.pid))


@dataclass
class ServeProcess:
    """A running ``mlflow models serve`` (its own process group) on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def wait_ping(self, timeout_s: float) -> None:
        """Until ``/ping`` answers 200; stops the server and raises after ``timeout_s`` or when
        it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"mlflow models serve exited ({self.proc.returncode}):\n"
                                   f"{self.tail()}")  # fmt: skip
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow models serve: no /ping after {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group (uvicorn's clean shutdown), SIGKILL to what is left
        after 20 s; returns once no process of the group runs (the port is closed) or after
        another 10 s."""
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while _group_alive(self.proc.pid) and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.1)
            if not _group_alive(self.proc.pid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies do not count; Linux ``/proc``)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def server_env(threads: int, tracking_uri: str | None = None) -> dict[str, str]:
    """The server's environment: this one, ``.venv/bin`` first on PATH (``uvicorn``), torch /
    OpenMP / MKL threads per worker, and the tracking URI of ``models:/`` URIs."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@contextlib.contextmanager
def serve(
    model_uri: str,
    env: dict[str, str],
    log: Path,
    workers: int = 1,
    timeout_s: float = 300.0,
    request_timeout_s: int = 60,
) -> Iterator[ServeProcess]:
    """``mlflow models serve`` on a free loopback port, up (``/ping``) within ``timeout_s``;
    stopped when the block ends, however it ends."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers),
           "-t", str(request_timeout_s)]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)  # fmt: skip
    server = ServeProcess(proc, port, log)
    try:
        server.wait_ping(timeout_s)
        yield server
    finally:
        server.stop()


# -- the load ---------------------------------------------------------------------------------


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    workers: int
    clients: int
    threads: int = 0  # torch threads per server worker
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: list[str] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)  # bodies of the 200 answers
    peak_rss: int = 0
    port: int = 0  # the server's

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.errors)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else math.nan


def run_level(
    port: int,
    bodies: Sequence[bytes],
    clients: int,
    max_requests: int,
    duration_s: float,
    request_timeout_s: float = 120.0,
    workers: int = 1,
    server_pid: int | None = None,
) -> LevelResult:
    """``clients`` threads, each with its own HTTP connection, POST ``/invocations`` one after
    the other (bodies in turn) until ``max_requests`` were sent in all or ``duration_s`` passed
    (requests under way then finish). Every thread ends within ``request_timeout_s`` of the
    deadline."""
    result = LevelResult(workers, clients)
    lock = threading.Lock()
    counter = iter(range(max_requests))
    start = time.perf_counter()
    deadline = start + duration_s
    last_done = [start]

    def take() -> int | None:
        with lock:
            if time.perf_counter() >= deadline:
                return None
            return next(counter, None)

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        while (n := take()) is not None:
            body = bodies[n % len(bodies)]
            t0 = time.perf_counter()
            err = data = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=request_timeout_s)
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    err = f"HTTP {resp.status}: {data[:300]!r}"
            except (OSError, http.client.HTTPException) as exc:
                err = f"{type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            if err is not None and conn is not None:
                conn.close()
                conn = None
            with lock:
                last_done[0] = max(last_done[0], time.perf_counter())
                if err is None:
                    result.latencies.append(dt)
                    result.responses.append(data)
                else:
                    result.errors.append(err)
        if conn is not None:
            conn.close()

    sampler = RssSampler(server_pid) if server_pid else contextlib.nullcontext()
    with sampler:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.perf_counter()) + request_timeout_s + 10)
    if server_pid:
        result.peak_rss = sampler.peak
    if any(t.is_alive() for t in threads):
        result.errors.append("a client thread did not finish in time")
    result.seconds = last_done[0] - start
    return result


def validate_level(result: LevelResult, schema: Sequence[tuple[str, str]]) -> None:
    """Move answers that do not match ``schema`` from the successes to the errors."""
    kept_lat, kept_resp = [], []
    for dt, body in zip(result.latencies, result.responses, strict=True):
        try:
            check_predictions(body, schema)
        except ValueError as exc:
            result.errors.append(f"bad answer: {exc}")
            continue
        kept_lat.append(dt)
        kept_resp.append(body)
    result.latencies, result.responses = kept_lat, kept_resp


def load_test(
    model_uri: str,
    bodies: Sequence[bytes],
    schema: Sequence[tuple[str, str]],
    log_dir: Path,
    workers: int = 1,
    levels: Sequence[int] = LEVELS,
    max_requests: int = 200,
    duration_s: float = 120.0,
    threads: int = 1,
    tracking_uri: str | None = None,
    start_timeout_s: float = 300.0,
    server_timeout_s: int = 60,
    warmup: int | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> list[LevelResult]:
    """Serve ``model_uri`` with ``workers`` workers and run every level of ``levels`` on it;
    the server is stopped before this returns or raises."""
    env = server_env(threads, tracking_uri)
    log = log_dir / f"serve-w{workers}.log"
    results = []
    with serve(model_uri, env, log, workers, start_timeout_s, server_timeout_s) as server:
        n_warm = warmup if warmup is not None else max(2, 2 * workers)
        if n_warm:
            warm = run_level(server.port, bodies, workers, n_warm, start_timeout_s)
            if warm.errors:
                print(f"warm-up errors (workers {workers}): {warm.errors[:3]}", file=sys.stderr)
        for clients in levels:
            res = run_level(server.port, bodies, clients, max_requests, duration_s,
                            float(server_timeout_s) + 30, workers, server.proc.pid)  # fmt: skip
            res.threads, res.port = threads, server.port
            validate_level(res, schema)
            results.append(res)
            if on_level:
                on_level(res)
    return results


def markdown_table(results: Sequence[LevelResult]) -> str:
    """One row per (workers, clients)."""
    from babelrs_core.io.markdown import table_head

    head = ["workers", "torch threads / worker", "clients", "requests", "throughput req/s"]
    head += ["p50 ms", "p95 ms", "p99 ms", "errors", "server peak RSS MiB"]
    lines = table_head(head, "r")
    for r in results:
        lines.append(
            f"| {r.workers} | {r.threads} | {r.clients} | {r.requests} | {r.throughput:.2f} | "
            f"{r.percentile_ms(50):.0f} | {r.percentile_ms(95):.0f} | {r.percentile_ms(99):.0f} "
            f"| {len(r.errors)} | {r.peak_rss / 2**20:.0f} |"
        )
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[LevelResult]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--manifest", default=None, help="images from its evaluation splits")
    ap.add_argument("--checkpoint", default=None, help="exported detector folder")
    ap.add_argument("--model", default=None, help="serve this model URI (models:/..., runs:/...)")
    ap.add_argument("--tiny", action="store_true", help="tests' tiny detector, synthetic images")
    ap.add_argument("--per-modality", type=int, default=4, help="images per modality")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="mlflow serve --workers")
    ap.add_argument("--clients", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--requests", type=int, default=200, help="requests per level (at most)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per level (at most)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per server worker (0: cores / workers)")  # fmt: skip
    ap.add_argument("--score-thr", type=float, default=None, help="the score_thr request param")
    ap.add_argument("--server-timeout", type=int, default=60, help="mlflow serve -t (seconds)")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="deadline for /ping")
    ap.add_argument("--write-docs", default=None, help=f"update this file's '{SECTION}'")
    args = ap.parse_args(argv)
    from babelrs_core.config import load_params

    params = load_params(args.params)
    manifest = Path(args.manifest or params.paths.manifest)
    cores = os.cpu_count() or 1
    results: list[LevelResult] = []
    with tempfile.TemporaryDirectory(prefix="bench_serving_load_") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint or params.paths.finetune_out)
        if args.model:
            tracking, model_uri, source = None, args.model, args.model
            images = _images(params, manifest, args, None)
        else:
            if args.tiny:
                ckpt, source = tiny_detector(tmp / "tiny"), "the tests' tiny detector (64 px)"
            elif (ckpt / "detector.json").exists():
                source = str(ckpt)
            elif manifest.exists():
                from bench.serving import scratch_detector

                ckpt = scratch_detector(args.params, manifest, tmp / "detector")
                source = "configured size, made by 1 scratch iteration"
            else:
                print(f"{ckpt}: no detector and {manifest}: no manifest; using the tiny detector",
                      file=sys.stderr)  # fmt: skip
                ckpt, source = tiny_detector(tmp / "tiny"), "the tests' tiny detector (64 px)"
            tracking, model_uri = register_in_store(ckpt, tmp / "store")
            images = _images(params, manifest, args, ckpt)
        schema = output_schema(model_uri, tracking)
        n_images = sum(map(len, images.values()))
        req_params = {"score_thr": args.score_thr} if args.score_thr is not None else None
        bodies = request_bodies(images, req_params)
        for workers in args.workers:
            threads = args.threads or max(1, cores // workers)
            results += load_test(
                model_uri, bodies, schema, tmp, workers, args.clients, args.requests,
                args.duration, threads, tracking, args.start_timeout, args.server_timeout,
                on_level=lambda r: print(f"workers {r.workers}, {r.clients} clients: "
                                         f"{r.requests} requests, {r.throughput:.2f} req/s, "
                                         f"{len(r.errors)} errors", file=sys.stderr),
            )  # fmt: skip
            for r in results[-len(args.clients) :]:
                for err in r.errors[:3]:
                    print(f"  error (workers {workers}, {r.clients} clients): {err}",
                          file=sys.stderr)  # fmt: skip
    threads_txt = str(args.threads) if args.threads else f"{cores} cores / workers"
    header = (
        f"Model: {source}; {n_images} images ({', '.join(images)}), one per request; "
        f"at most {args.requests} requests or {args.duration:.0f} s per level; "
        f"torch threads per worker: {threads_txt}; mlflow serve -t {args.server_timeout}; "
        f"{cores} cores; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    table = "\n".join([header, "", markdown_table(results)])
    print("\n" + table)
    if args.write_docs:
        _write_docs(args.write_docs, table, argv)
    return results


def _images(
    params: Any, manifest: Path, args: argparse.Namespace, detector_dir: Path | None
) -> dict[str, list[Any]]:
    """The manifest's evaluation images (not with ``--tiny``), else synthetic ones."""
    if manifest.exists() and not args.tiny:
        from bench.serving import eval_images

        found = eval_images(params, manifest, args.per_modality)
        if found:
            return found
    if detector_dir is None:
        raise SystemExit(f"{manifest}: no manifest for images (give --manifest)")
    return synthetic_images(detector_dir)


def _write_docs(path: str, table: str, argv: Sequence[str] | None) -> None:
    from babelrs_core.io.results_md import update_results_md

    args = " ".join(sys.argv[1:] if argv is None else argv)
    section = "\n".join([
        SECTION,
        "",
        "`mlflow models serve --env-manager local` on 127.0.0.1 answering `POST /invocations`",
        "(one PNG image per request, base64 in `dataframe_split` JSON) to 1, 4 and 16 concurrent",
        "clients (threads of the bench, each with its own keep-alive connection, on the same",
        "machine). Latency per request as the client sees it; errors: non-200, connection",
        "failures / timeouts, answers not matching the output schema; peak RSS of the server's",
        "process tree (CLI, uvicorn, workers).",
        "",
        "```",
        f".venv/bin/python bench/serving_load.py {args}".rstrip(),
        "```",
        "",
        table,
        "",
    ])  # fmt: skip
    update_results_md(path, section, SECTION, title="# Benchmarks")


if __name__ == "__main__":
    main()
