"""Register the fine-tuned detector in the MLflow model registry and run the promotion gate.

MLflow is the source of truth: a version's evaluation numbers are its ``eval.*`` tags (and its
``eval`` artifact), the gate's verdict its ``gate.*`` tags (also set on the version's run), the
champion is the alias ``champion``. Nothing here deletes a version.

**Concurrent promotions.** The gate (read champion, compare, move the alias, write tags) runs while
holding a lock on the tracking server (:mod:`babelrs_core.registry.lock`): the registered model
``<name>.promotion-lock``, whose creation is atomic on the server. Two gates for the same model
name, in any processes or machines on one tracking server, therefore run one after the other: the
second compares against the champion the first left. A lock is taken over only when its owner is
known to be gone (a dead process on this host, or older than ``registry.lock_stale_s`` on another
host). After moving the alias the gate reads it back and fails if it changed.

**Interrupted registrations.** A version is created with the tag ``babelrs.registration=started``
(in the same request as its other tags), which becomes ``complete`` once the challenger alias, the
card and the gate are done. A register stage that finds a ``started`` version of the same weights
(``detector.sha256``) evaluated on the same data (``eval.data_hash``), left by a run that died
(the tracking server or the process killed mid-way), finishes that version instead of registering
another: no version is left without its gate tags, and none is registered twice.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from babelrs_core.concepts import DATASETS
from babelrs_core.config import Params, Registry
from babelrs_core.errors import BabelrsError
from babelrs_core.registry.gate import Decision, decide
from babelrs_core.registry.lock import promotion_lock
from babelrs_core.settings_env import read

if TYPE_CHECKING:
    from babelrs_core.evaluation.metrics import EvalInfo

CHAMPION = "champion"
CHALLENGER = "challenger"
PAUSE_ENV = "BABELRS_GATE_PAUSE_S"  # tests: seconds to hold the lock (widens a race window)
#: tests only: "1" = stop this process (SIGSTOP) right after the version is created (fault suite)
STOP_AFTER_REGISTER_ENV = "BABELRS_FAULT_STOP_AFTER_REGISTER"
#: version tag: ``started`` from its creation, ``complete`` once alias, card and gate are done
STATUS_TAG = "babelrs.registration"
EVAL_METRICS = ("ap50", "map", "hmap")


class Registration(TypedDict):
    """``registration.json``: the version a register stage made (or finished) and its gate."""

    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    source: str  # the logged model's artifact URI
    resumed: bool  # an interrupted registration of the same weights was finished
    run_id: str
    hmap: float
    promoted: NotRequired[bool]  # with the gate: whether it became the champion
    gate: NotRequired[dict[str, str]]  # the gate's decision as version tags


class RegistryError(BabelrsError, RuntimeError):
    """The registry is not in a state the operation needs (the message says what to do)."""

    transient = True


def _client(tracking_uri: str | None = None) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


# --- versions ---------------------------------------------------------------------------------


def eval_tags(ev: dict[str, Any], info: EvalInfo) -> dict[str, str]:
    """``eval.*`` tags of a version: the numbers of ``eval.json`` and what was evaluated."""
    tags = {
        f"eval.{key}.{m}": f"{float(val[m]):.4f}"
        for key, val in ev.items()
        if isinstance(val, dict)
        for m in EVAL_METRICS
        if m in val
    }
    tags["eval.data_hash"] = str(info.get("data_hash", ""))
    tags["eval.splits"] = ",".join(f"{k}:{v}" for k, v in sorted(info.get("splits", {}).items()))
    return tags


def eval_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The ``eval.json`` numbers back from a version's ``eval.*`` tags."""
    out: dict[str, dict[str, float]] = {}
    for key, value in tags.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "eval" and parts[2] in EVAL_METRICS:
            out.setdefault(parts[1], {})[parts[2]] = float(value)
    if "hmap" not in out.get("overall", {}):
        raise RegistryError(
            "model version has no eval.overall.hmap tag (not registered by babelrs)"
        )
    return out


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The version ``alias`` of model ``name`` points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_version(client: Any, name: str) -> Any | None:
    """The version the alias ``champion`` points at, or None."""
    return alias_version(client, name, CHAMPION)


Reevaluate = Callable[[Any], dict[str, Any]]


def promote(
    name: str,
    version: str | int,
    cfg: Registry,
    tracking_uri: str | None = None,
    reevaluate: Reevaluate | None = None,
) -> Decision:
    """Run the gate for ``version`` of model ``name`` under the promotion lock; set the alias
    ``champion`` if it passes; tag the version and its run with the decision either way.

    ``reevaluate(champion_model_version) -> eval.json mapping`` scores the champion on the
    challenger's evaluation data when their ``eval.data_hash`` tags differ (without it, such a
    challenger is rejected)."""
    client = _client(tracking_uri)
    version = str(version)
    mv = client.get_model_version(name, version)
    challenger = eval_from_tags(mv.tags)
    asked = time.monotonic()
    with promotion_lock(client, name, cfg):
        # seconds spent waiting for another promotion: > 0 shows two gates really overlapped
        extra: dict[str, str] = {"gate.lock_wait_s": f"{time.monotonic() - asked:.2f}"}
        champ = champion_version(client, name)
        if champ is not None and str(champ.version) == version:
            decision = Decision(
                True, f"v{version} is already the champion", challenger["overall"]["hmap"]
            )
            return decision
        if champ is None:
            decision = decide(
                challenger, None, margin=cfg.margin, max_drop=cfg.max_drop, floor=cfg.floor
            )
        else:
            theirs = eval_from_tags(champ.tags)
            same = champ.tags.get("eval.data_hash") == mv.tags.get("eval.data_hash")
            if not same and reevaluate is not None:
                theirs = reevaluate(champ)
                extra["gate.champion_reevaluated"] = "true"
            if not same and reevaluate is None:
                decision = Decision(
                    False,
                    f"champion v{champ.version} was evaluated on other data "
                    f"(eval.data_hash {champ.tags.get('eval.data_hash')} != "
                    f"{mv.tags.get('eval.data_hash')}); run the register stage to re-evaluate it",
                    challenger["overall"]["hmap"],
                    champion_version=str(champ.version),
                )
            else:
                decision = decide(
                    challenger,
                    theirs,
                    margin=cfg.margin,
                    max_drop=cfg.max_drop,
                    floor=cfg.floor,
                    champion_version=str(champ.version),
                )
        pause = float(read(PAUSE_ENV, "0") or 0)
        if pause > 0:
            time.sleep(pause)
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, version)
            now = champion_version(client, name)
            if now is None or str(now.version) != version:
                raise RegistryError(f"alias {CHAMPION!r} of {name!r} moved during the promotion")
        tags = {
            **decision.as_tags(),
            **extra,
            "gate.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value[:5000])
        if mv.run_id:
            for key, value in tags.items():
                client.set_tag(mv.run_id, key, value[:5000])
        write_card(client, name, version)
    return decision


def write_card(client: Any, name: str, version: str) -> None:
    """Set the version's description to its model card (registry/card.py), from its tags."""
    from babelrs_core.registry.card import model_card

    mv = client.get_model_version(name, version)
    card = model_card(name, str(version), dict(mv.tags or {}), mv.run_id)
    client.update_model_version(name, version, description=card)


def mark_challenger(client: Any, name: str, version: str, cfg: Registry) -> float:
    """Point the alias ``challenger`` at ``version`` under the promotion lock, unless a newer
    version already holds it (two register stages finishing in either order leave the newest).
    Returns the seconds spent waiting for the lock (also the version's tag
    ``challenger.lock_wait_s``)."""
    asked = time.monotonic()
    with promotion_lock(client, name, cfg):
        waited = time.monotonic() - asked
        current = alias_version(client, name, CHALLENGER)
        if current is None or int(current.version) < int(version):
            client.set_registered_model_alias(name, CHALLENGER, version)
        client.set_model_version_tag(name, version, "challenger.lock_wait_s", f"{waited:.2f}")
    return waited


def unfinished_version(client: Any, name: str, weights_sha256: str, data_hash: str) -> Any | None:
    """The newest version of ``name`` whose registration started but never completed, for these
    weights and evaluation data, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    found = [
        v
        for v in versions
        if (v.tags or {}).get(STATUS_TAG) == "started"
        and v.tags.get("detector.sha256") == weights_sha256
        and v.tags.get("eval.data_hash") == data_hash
    ]
    return max(found, key=lambda v: int(v.version)) if found else None


def register(
    params: Params,
    detector_dir: Path | None = None,
    eval_dir: Path | None = None,
    run_id: str | None = None,
    gate: bool = True,
) -> Registration:
    """Log the exported detector as a pyfunc model (in run ``run_id``, else a new run), register
    it as a new version of ``registry.model_name`` with the alias ``challenger`` and its
    evaluation as tags, then run the promotion gate. Writes ``registration.json``."""
    import mlflow

    from babelrs_core.detector.checkpoint import read_detector_json
    from babelrs_core.io.atomic import write_json
    from babelrs_core.registry.pyfunc import log_detector_model
    from babelrs_core.tracking import Tracker, fluent_tracking_uri, git_lineage

    cfg = params.registry
    detector_dir = Path(detector_dir or params.paths.finetune_out)
    eval_dir = Path(eval_dir or params.paths.eval_out)
    _, info = read_detector_json(detector_dir)
    ev, ev_info = _read_eval(eval_dir)
    if ev_info.get("weights_sha256") != info.get("sha256"):
        raise ValueError(
            f"{eval_dir / 'eval_info.json'}: evaluates weights {ev_info.get('weights_sha256')}, "
            f"but {detector_dir} holds {info.get('sha256')}; run the evaluate stage first"
        )
    tracker = Tracker.from_params(params)
    own_run = run_id is None
    if run_id is None:
        run_id = tracker.start("register", {**git_lineage(), "babelrs.stage": "register"})
    try:
        client = tracker.client
        tags = {
            **eval_tags(ev, ev_info),
            "detector.sha256": str(info.get("sha256")),
            "detector.init": str(info.get("init")),
            "detector.encoder": str(info.get("encoder")),
            **git_lineage(),
        }
        mv = unfinished_version(
            client, cfg.model_name, tags["detector.sha256"], tags["eval.data_hash"]
        )
        resumed = mv is not None
        if mv is not None:  # an interrupted registration of these weights: finish it
            source = mv.source
            version = str(mv.version)
            client.set_model_version_tag(
                cfg.model_name, version, f"{STATUS_TAG}.resumed_by_run", str(run_id)
            )
        else:
            with fluent_tracking_uri(tracker.uri):
                with mlflow.start_run(run_id=run_id, nested=True):
                    files = [eval_dir / "metrics" / "eval.json", eval_dir / "eval_info.json"]
                    source = log_detector_model(detector_dir, files).model_uri
                mv = mlflow.register_model(
                    source, cfg.model_name, tags={**tags, STATUS_TAG: "started"}
                )
            # leaving the block ended the stage's run: it is running until the stage ends (a
            # crash from here on leaves it RUNNING, which the next run of the stage closes)
            client.update_run(run_id, status="RUNNING")
            if read(STOP_AFTER_REGISTER_ENV) == "1":
                os.kill(os.getpid(), signal.SIGSTOP)
        mark_challenger(client, cfg.model_name, str(mv.version), cfg)
        write_card(client, cfg.model_name, str(mv.version))  # the gate rewrites it with its verdict
        result: Registration = {
            "model_name": cfg.model_name,
            "version": str(mv.version),
            "model_uri": f"models:/{cfg.model_name}/{mv.version}",
            "source": source,
            "resumed": resumed,
            "run_id": run_id,
            "hmap": float(ev["overall"]["hmap"]),
        }
        if gate:
            reeval = _reevaluator(params, eval_dir, tracker.uri)
            decision = promote(cfg.model_name, mv.version, cfg, tracker.uri, reeval)
            result["promoted"] = decision.promote
            result["gate"] = decision.as_tags()
        client.set_model_version_tag(cfg.model_name, str(mv.version), STATUS_TAG, "complete")
        write_json(Path(cfg.out_dir) / "registration.json", result)
        if own_run:
            tracker.finish(run_id, True)
        return result
    except BaseException:
        if own_run:
            tracker.finish(run_id, False)
        raise


def _read_eval(eval_dir: Path) -> tuple[dict[str, Any], EvalInfo]:
    import json

    out = []
    for f in (eval_dir / "metrics" / "eval.json", eval_dir / "eval_info.json"):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (run the evaluate stage first)")
        try:
            out.append(json.loads(f.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{f}: not valid JSON ({exc})") from None
    ev, info = out
    if "hmap" not in ev.get("overall", {}) or not any(k in DATASETS for k in ev):
        raise ValueError(f"{eval_dir / 'metrics' / 'eval.json'}: no overall.hmap / dataset mAPs")
    return ev, cast("EvalInfo", info)


def _reevaluator(params: Params, eval_dir: Path, tracking_uri: str) -> Reevaluate:
    """Score a registered version on the evaluation data of this run (same params, manifest)."""

    def reevaluate(mv: Any) -> dict[str, Any]:
        import mlflow

        from babelrs_core.evaluation.report import run_evaluation

        with tempfile.TemporaryDirectory(prefix="babelrs-champion-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                f"models:/{mv.name}/{mv.version}",
                dst_path=tmp,
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
            detector = Path(local) / "artifacts" / "detector"
            result = run_evaluation(params, checkpoint=detector, out=Path(tmp) / "eval")
        return {k: v for k, v in result.items() if k not in ("info", "out")}

    return reevaluate
