#!/usr/bin/env bash
# The two web UIs of a local babelrs checkout (`make ui`, docs/tracking.md):
#
#   1. the MLflow UI (`mlflow server`) on the project's tracking store: the SQLite database and
#      artifacts under tracking.store of params.yaml (default outputs/mlflow), the same store
#      `make run` writes; with MLFLOW_TRACKING_URI set to a server, that server is the UI and
#      no local one is started;
#   2. a persistent Prefect server (SQLite under outputs/prefect: prefect.db, the database that the
#      ephemeral server of `make run` / `make ablation` uses, so earlier runs are listed too).
#
# Both bind to 127.0.0.1. Once both answer their health endpoints the script prints the URLs and
# writes the Prefect API URL to $BABELRS_PREFECT_DIR/api_url: `make run` and `make ablation` read
# that file and, if the server answers, send their flow runs there (PREFECT_API_URL) instead of an
# ephemeral server.
# Ctrl-C (or SIGTERM) stops both servers and removes api_url.
#
# Settings (environment):
#   BABELRS_MLFLOW_PORT       MLflow UI port (default 5000)
#   BABELRS_PREFECT_PORT      Prefect server port (default 4200)
#   BABELRS_PREFECT_DIR       PREFECT_HOME, database, logs and api_url (default outputs/prefect)
#   BABELRS_PARAMS            params file read for tracking.store (default params.yaml)
#   BABELRS_UI_TIMEOUT        seconds to wait for healthy servers (default 180)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"  # tracking.store and the other relative paths of params.yaml are relative to the repo

BIN="${BABELRS_VENV_BIN:-$ROOT/.venv/bin}"
MLFLOW_PORT="${BABELRS_MLFLOW_PORT:-5000}"
PREFECT_PORT="${BABELRS_PREFECT_PORT:-4200}"
STATE="${BABELRS_PREFECT_DIR:-$ROOT/outputs/prefect}"
PARAMS="${BABELRS_PARAMS:-params.yaml}"
TIMEOUT="${BABELRS_UI_TIMEOUT:-180}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
API_FILE="$STATE/api_url"

log() { printf '[ui] %s\n' "$*"; }
# prefect_server_env, alive, stop_if_alive, port_busy, start_bg, wait_healthy
# shellcheck source=infra/local/_common.sh
source "$ROOT/infra/local/_common.sh"

# Prefect settings for the server: the database of `make run` / `make ablation`
prefect_server_env "$STATE" "$PREFECT_PORT" prefect.db
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
PREFECT_URL="http://127.0.0.1:$PREFECT_PORT"
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"

# the tracking store as the pipeline resolves it: "<backend URI> <artifact root URI or ->"
read -r BACKEND ARTIFACTS < <("$BIN/python" -c '
import sys
from pathlib import Path
from babelrs_core.config import load_params
from babelrs_core.tracking import default_tracking_uri
store = Path(load_params(sys.argv[1]).tracking.store)
uri = default_tracking_uri(store)
local = uri.startswith("sqlite")
print(uri, (store / "artifacts").resolve().as_uri() if local else "-")
' "$PARAMS")
if [[ -z "${BACKEND:-}" ]]; then
  log "error: could not resolve the tracking store from $PARAMS" >&2
  exit 1
fi


START_MLFLOW=1
if [[ "$BACKEND" == http://* || "$BACKEND" == https://* ]]; then
  START_MLFLOW=0
  MLFLOW_URL="$BACKEND"
fi
for port in "$PREFECT_PORT" $([[ $START_MLFLOW == 1 ]] && echo "$MLFLOW_PORT"); do
  if port_busy "$port"; then
    log "error: 127.0.0.1:$port is already in use; set BABELRS_PREFECT_PORT / BABELRS_MLFLOW_PORT" >&2
    exit 1
  fi
done

MLFLOW_PID=""
PREFECT_PID=""


cleanup() {
  trap - INT TERM EXIT
  rm -f "$API_FILE"
  stop_if_alive "$MLFLOW_PID" "the MLflow UI" INT TERM
  stop_if_alive "$PREFECT_PID" "the Prefect server" INT TERM
  log "stopped"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT


start_bg "$STATE/server.log" "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
  --analytics-off
PREFECT_PID=$BG_PID
if [[ $START_MLFLOW == 1 ]]; then
  ARGS=(--workers 1 --backend-store-uri "$BACKEND")
  [[ "$ARTIFACTS" == "-" ]] || ARGS+=(--default-artifact-root "$ARTIFACTS")
  start_bg "$STATE/mlflow-ui.log" "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
    "${ARGS[@]}" --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT"
  MLFLOW_PID=$BG_PID
  wait_healthy "MLflow UI" "$MLFLOW_PID" "$MLFLOW_URL/health" "$STATE/mlflow-ui.log"
else
  log "MLFLOW_TRACKING_URI is a server: no local MLflow UI started"
fi
wait_healthy "Prefect server" "$PREFECT_PID" "$PREFECT_URL/api/health" "$STATE/server.log"
printf '%s\n' "$PREFECT_URL/api" >"$API_FILE"

log "MLflow UI:  $MLFLOW_URL   (store: ${BACKEND%%\?*})"
log "Prefect UI: $PREFECT_URL   (API $PREFECT_URL/api, written to $API_FILE for make run / ablation)"
log "Ctrl-C stops both"

# Wait until Ctrl-C, or until a server exits on its own.
while alive "$PREFECT_PID" && { [[ $START_MLFLOW == 0 ]] || alive "$MLFLOW_PID"; }; do
  wait -n $PREFECT_PID $MLFLOW_PID 2>/dev/null || true
done
log "error: a server exited on its own (see $STATE/server.log, $STATE/mlflow-ui.log)" >&2
exit 1
