"""MLflow tracking: one parent run per pipeline run, one nested child run per stage.

* The embedded default is a local SQLite store under ``outputs/mlflow`` that needs no server;
  ``MLFLOW_TRACKING_URI`` switches to a server (read by MLflow itself).
* Step metrics are buffered and sent with ``log_batch`` (at most one call per ``flush_every``
  metrics, never one HTTP call per scalar in a training loop).
* Lineage tags: git commit and dirty flag, params hash, data hash of the inputs, Prefect
  flow-run id when running inside Prefect.
* Only rank 0 logs when training is distributed (``RANK`` / ``LOCAL_RANK`` env, as torchrun sets).
* Secrets never go to MLflow: params are plain numbers/paths, and :func:`redact` scrubs values of
  credential-like environment variables from any text before it is logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from babelrs_core.settings_env import read

DEFAULT_STORE = Path("outputs/mlflow")
SECRET_ENV_MARKERS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL", "AUTH_STRING")
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_key(key: str) -> str:
    """``key`` with the characters MLflow refuses in names replaced (``a~b`` -> ``a-vs-b``)."""
    return _BAD_KEY_CHARS.sub("_", key.replace("~", "-vs-"))


def is_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a distributed job."""
    return int(read("RANK") or read("LOCAL_RANK") or "0") == 0


def default_tracking_uri(store: Path = DEFAULT_STORE) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a local SQLite store (no server needed)."""
    uri = read("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def _environ_snapshot() -> dict[str, str]:
    """A copy of the environment; MLflow's telemetry thread sets and deletes a variable while the
    copy is made, so a copy that races with it is retried."""
    for _ in range(20):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):  # a key deleted / added while iterating
            continue
    return dict(os.environ)


def secret_values() -> list[str]:
    """Values of credential-like environment variables (never to be logged)."""
    return [
        v
        for k, v in _environ_snapshot().items()
        if v
        and len(v) >= 4
        and any(m in k.upper() for m in SECRET_ENV_MARKERS)
        and not k.upper().endswith("_FILE")  # the path of a secret file, not the secret
    ]


def redact(text: str) -> str:
    """``text`` with every secret environment value replaced by ``***``."""
    for value in secret_values():
        text = text.replace(value, "***")
    return text


def git_lineage(cwd: Path | None = None) -> dict[str, str]:
    """Git commit and dirty flag of the working tree (``unknown`` outside a repository)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def params_hash(flat: Mapping[str, Any]) -> str:
    """Stable short hash of a flattened params mapping."""
    blob = json.dumps(dict(sorted(flat.items())), default=str, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class MetricBuffer:
    """Buffer step metrics and send them to one run with ``log_batch``."""

    def __init__(self, client: Any, run_id: str, flush_every: int = 200) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self._pending: list[Any] = []
        self.calls = 0  # number of log_batch calls made (observable in tests)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue ``metrics`` at ``step``; non-finite values are kept out (counted by stages)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            v = float(value)
            if v == v and abs(v) != float("inf"):
                self._pending.append(
                    Metric(key=metric_key(key), value=v, timestamp=now, step=int(step))
                )
        if len(self._pending) >= self.flush_every:
            self.flush()

    __call__ = log

    def flush(self) -> None:
        """Send everything queued (chunks of 1000, MLflow's per-request limit)."""
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)
            self.calls += 1


#: The metric sink of the stage running now (None: not tracked). Training loops call
#: :func:`log_step`; only the runner decides where the numbers go.
_SINK: ContextVar[MetricBuffer | None] = ContextVar("babelrs_metric_sink", default=None)


def log_step(step: int, metrics: Mapping[str, float]) -> None:
    """Send step metrics to the tracked stage run, if any (cheap no-op otherwise)."""
    sink = _SINK.get()
    if sink is not None and is_rank_zero():
        sink.log(step, metrics)


def log_paths(client: Any, run_id: str, paths: list[Path], artifact_dir: str = "") -> None:
    """Log files and folders that exist to ``run_id`` (a folder under ``artifact_dir/<its name>``,
    a file under ``artifact_dir``); missing ones are skipped."""
    for p in map(Path, paths):
        if p.is_dir():
            client.log_artifacts(run_id, str(p), f"{artifact_dir}/{p.name}".strip("/"))
        elif p.is_file():
            client.log_artifact(run_id, str(p), artifact_dir or None)


def log_current_artifacts(paths: list[Path], artifact_dir: str = "") -> bool:
    """Log ``paths`` to the tracked stage run now, from inside the stage (e.g. the report of a
    stage that is about to fail: the runner logs a spec's artifacts only after success). False
    when untracked."""
    sink = _SINK.get()
    if sink is None or not is_rank_zero():
        return False
    log_paths(sink.client, sink.run_id, paths, artifact_dir)
    return True


def current_run_id() -> str | None:
    """The MLflow run of the tracked stage running now (None when untracked)."""
    sink = _SINK.get()
    return sink.run_id if sink is not None else None


def flatten_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested summary as dotted keys (bools and strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            out.update(flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out[prefix] = float(data)
    return out


def prefect_lineage() -> dict[str, str]:
    """Prefect flow-run id and name when called inside a flow run."""
    try:
        from prefect.runtime import flow_run
    except ImportError:  # pragma: no cover - prefect is a hard dependency
        return {}
    run_id = flow_run.get_id()
    return {"prefect.flow_run_id": str(run_id)} if run_id else {}


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``, ``register_model``) at
    ``uri`` for the block, then restore the process-wide URI and ``MLFLOW_TRACKING_URI``."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_env, saved_uri = read("MLFLOW_TRACKING_URI"), utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = saved_uri
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ.update(MLFLOW_TRACKING_URI=saved_env)


#: tag of a failed run: the error's type and message (at most ERROR_TAG_CHARS characters)
ERROR_TAG, ERROR_TAG_CHARS = "babelrs.error", 500
#: tag prefix of the process that created a run (``host``, ``pid``, ``pid_start``, ``boot_id``)
OWNER_TAG = "babelrs.owner"


def owner_tags() -> dict[str, str]:
    """``babelrs.owner.*`` tags of this process (the registry lock's notion of an owner)."""
    from babelrs_core.registry.lock import Owner

    me = Owner.me()
    fields = {"host": me.host, "pid": str(me.pid), "pid_start": me.pid_start, "boot_id": me.boot_id}
    return {f"{OWNER_TAG}.{k}": v for k, v in fields.items()}


class Tracker:
    """MLflow runs for one pipeline run: a parent run, a child run per stage."""

    def __init__(
        self,
        experiment: str,
        tracking_uri: str | None = None,
        flush_every: int = 200,
        artifact_location: str | None = None,
    ) -> None:
        self.enabled = is_rank_zero()
        self.flush_every = flush_every
        if not self.enabled:  # other ranks of a torchrun job never talk to MLflow
            return
        import mlflow

        # a client bound to the URI; the process-wide URI (and MLFLOW_TRACKING_URI, which MLflow's
        # set_tracking_uri also writes) stay untouched, so another Tracker in this process still
        # follows its own params (see fluent_tracking_uri for MLflow's fluent API)
        self.uri = tracking_uri or default_tracking_uri()
        self.client = mlflow.MlflowClient(self.uri)
        self.experiment_id = self._experiment_id(experiment, artifact_location)

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        """The id of experiment ``name``, created when missing. Another process may create it in
        between (the launchers of a multi-node run start together): then its id is used."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def start(self, name: str, tags: Mapping[str, str], parent_id: str | None = None) -> str:
        """Create a run (nested under ``parent_id``) and return its id. The run records its owner
        process (``babelrs.owner.*`` tags); runs of the same name and params hash that a killed
        process left RUNNING are closed first (:meth:`close_orphans`)."""
        self.close_orphans(name, tags.get("babelrs.params_hash"))
        all_tags = {**tags, **owner_tags()}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def close_orphans(self, name: str, params_hash: str | None = None) -> list[str]:
        """Mark KILLED the runs called ``name`` (with this params hash, if given) still RUNNING
        whose owner process is known to be gone: on this host, a dead pid, a pid reused by a
        younger process, or a boot ago (``babelrs.owner.*`` tags). A run of another host or
        without owner tags is left as it is (nobody can tell it is dead). Returns their ids."""
        from babelrs_core.registry.lock import Owner, owner_alive

        query = f"attributes.run_name = '{name}' AND attributes.status = 'RUNNING'"
        if params_hash:
            query += f" AND tags.`babelrs.params_hash` = '{params_hash}'"
        closed = []
        for run in self.client.search_runs([self.experiment_id], query, max_results=100):
            tag = {k.removeprefix(f"{OWNER_TAG}."): v for k, v in run.data.tags.items()}
            if not tag.get("pid", "").isdigit():
                continue
            who = f"{tag.get('host', '')}:{tag['pid']}"
            owner = Owner(
                who,
                tag.get("host", ""),
                int(tag["pid"]),
                tag.get("pid_start", ""),
                tag.get("boot_id", ""),
                0.0,
            )
            if owner_alive(owner) is False:
                note = f"its process {who} is gone; closed at the start of a new {name} run"
                self.client.set_tag(run.info.run_id, "babelrs.closed_as_orphan", note)
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
        return closed

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params in batches of 100 (MLflow's per-request limit), values as text."""
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_artifacts(self, run_id: str, paths: list[Path], artifact_dir: str = "") -> None:
        """Files or folders that exist; missing ones are skipped."""
        log_paths(self.client, run_id, paths, artifact_dir)

    def log_table_input(self, run_id: str, path: Path, context: str, digest: str) -> None:
        """Record a Parquet table (the manifest) as the run's MLflow dataset input: name, digest,
        source, column schema and row count, tagged with ``context`` (training, evaluation, ...).
        Reads only the file's footer."""
        import pyarrow.parquet as pq
        from mlflow.entities import Dataset, DatasetInput, InputTag

        meta = pq.read_metadata(path)
        cols = [{"name": f.name, "type": str(f.type)} for f in meta.schema.to_arrow_schema()]
        dataset = Dataset(
            name=path.stem,
            digest=digest,
            source_type="local",
            source=json.dumps({"uri": str(path)}),
            schema=json.dumps({"babelrs_columns": cols}),
            profile=json.dumps({"num_rows": meta.num_rows}),
        )
        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])

    def finish(self, run_id: str, ok: bool, error: BaseException | None = None) -> None:
        """Close a run as FINISHED or FAILED; a failed run's ``error`` becomes its tag
        ``babelrs.error`` (type and message, secrets redacted), what a retry or a reader of the
        MLflow UI needs to know about the attempt."""
        if error is not None:
            text = redact(f"{type(error).__name__}: {error}")[:ERROR_TAG_CHARS]
            self.client.set_tag(run_id, ERROR_TAG, text)
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    @classmethod
    def from_params(cls, params: Any) -> Tracker:
        """Tracker for ``params.tracking`` (``MLFLOW_TRACKING_URI`` wins over the local store)."""
        cfg = params.tracking
        uri = default_tracking_uri(Path(cfg.store))
        # a local store keeps its artifacts beside the database; a server decides for itself
        artifacts = (
            (Path(cfg.store) / "artifacts").resolve().as_uri() if uri.startswith("sqlite") else None
        )
        return cls(cfg.experiment, uri, cfg.flush_every, artifacts)

    @contextmanager
    def metric_sink(self, run_id: str) -> Iterator[MetricBuffer]:
        """Route :func:`log_step` calls to ``run_id`` while the block runs."""
        buffer = MetricBuffer(self.client, run_id, self.flush_every)
        token = _SINK.set(buffer)
        try:
            yield buffer
        finally:
            _SINK.reset(token)
            buffer.flush()
