#!/usr/bin/env bash
# Local Prefect scheduler for babelrs (`make serve-scheduler`, docs/orchestration.md):
#
#   1. a Prefect server on 127.0.0.1 (SQLite under outputs/prefect, analytics and promotional
#      content off), waited for until healthy;
#   2. the `process` work pool `babelrs-process`;
#   3. the tag concurrency limit `gpu` = orchestration.gpu_concurrency of params.yaml;
#   4. the deployments of prefect.yaml (`prefect deploy --all`: weekly-retrain, Mondays 03:00 UTC,
#      and ablation, run on demand);
#   5. a worker on the pool, started from the repository root.
#
# Ctrl-C (or SIGTERM) stops the worker (two SIGINTs, as Prefect workers want) and then the server.
# The UI is on http://127.0.0.1:$PORT. MLflow: export MLFLOW_TRACKING_URI before starting to send
# the runs to a server (default: the local store under outputs/mlflow).
#
# Settings (environment):
#   BABELRS_PREFECT_PORT      server port (default 4200)
#   BABELRS_PREFECT_DIR       PREFECT_HOME, database and logs (default outputs/prefect)
#   BABELRS_PARAMS            params file read for orchestration.* (default params.yaml)
#   BABELRS_PREFECT_TIMEOUT   seconds to wait for a healthy server (default 180)
#   PREFECT_WORKER_QUERY_SECONDS  worker poll interval (Prefect's default: 10)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"  # also sets $PWD, which prefect.yaml's pull step records at deploy time

BIN="${BABELRS_VENV_BIN:-$ROOT/.venv/bin}"
PORT="${BABELRS_PREFECT_PORT:-4200}"
STATE="${BABELRS_PREFECT_DIR:-$ROOT/outputs/prefect}"
PARAMS="${BABELRS_PARAMS:-params.yaml}"
TIMEOUT="${BABELRS_PREFECT_TIMEOUT:-180}"
POOL="babelrs-process"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"

log() { printf '[serve-scheduler] %s\n' "$*"; }
# prefect_server_env, alive, stop_if_alive, port_busy, start_bg, wait_healthy
# shellcheck source=infra/local/_common.sh
source "$ROOT/infra/local/_common.sh"

# Prefect settings for every process started here; own database file: `make run` (ephemeral
# server, same PREFECT_HOME) uses prefect.db; the task cache ($PREFECT_HOME/storage) is shared
# with it
prefect_server_env "$STATE" "$PORT" scheduler.db
API="http://127.0.0.1:$PORT/api"

GPU_LIMIT="$("$BIN/python" -c '
import sys
from babelrs_core.config import load_params
print(load_params(sys.argv[1]).orchestration.gpu_concurrency)
' "$PARAMS")"

if port_busy "$PORT"; then
  log "error: 127.0.0.1:$PORT is already in use (another Prefect server?); set BABELRS_PREFECT_PORT" >&2
  exit 1
fi

SERVER_PID=""
WORKER_PID=""


cleanup() {
  trap - INT TERM EXIT
  stop_if_alive "$WORKER_PID" "the worker" INT INT
  stop_if_alive "$SERVER_PID" "the Prefect server" INT TERM
  log "stopped"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT


log "starting the Prefect server on http://127.0.0.1:$PORT (state in $STATE)"
start_bg "$STATE/server.log" "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" \
  --analytics-off
SERVER_PID=$BG_PID

wait_healthy "Prefect server" "$SERVER_PID" "$API/health" "$STATE/server.log"
log "UI http://127.0.0.1:$PORT"

export PREFECT_API_URL="$API"
if "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
  log "work pool $POOL exists"
else
  "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
  log "created work pool $POOL (process)"
fi

"$BIN/prefect" concurrency-limit create gpu "$GPU_LIMIT" >/dev/null
log "tag concurrency limit: gpu = $GPU_LIMIT (orchestration.gpu_concurrency in $PARAMS)"

"$BIN/prefect" deploy --all --no-prompt >>"$STATE/deploy.log" 2>&1 || {
  log "error: prefect deploy failed; last lines of $STATE/deploy.log:" >&2
  tail -n 30 "$STATE/deploy.log" >&2
  exit 1
}
log "deployed: $(COLUMNS=200 "$BIN/prefect" deployment ls 2>/dev/null |
  grep -o 'babelrs-[a-z]*/[A-Za-z0-9_-]*' | sort -u | tr '\n' ' ')"

start_bg "$STATE/worker.log" "$BIN/prefect" worker start --pool "$POOL" \
  --name "babelrs-local-$(hostname)"
WORKER_PID=$BG_PID
log "worker started (pid $WORKER_PID, pool $POOL, log $STATE/worker.log)"
log "run now: PREFECT_API_URL=$API $BIN/prefect deployment run babelrs-retrain/weekly-retrain"
log "Ctrl-C stops the worker and the server"

# Wait until Ctrl-C, or until the worker or the server exits on its own.
while alive "$WORKER_PID" && alive "$SERVER_PID"; do
  wait -n "$WORKER_PID" "$SERVER_PID" 2>/dev/null || true
done
log "error: the worker or the server exited on its own (see $STATE/*.log)" >&2
exit 1
