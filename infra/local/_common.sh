# Shell helpers shared by infra/local/ui.sh and infra/local/serve_scheduler.sh (sourced; $BIN is
# the virtualenv's bin folder, TIMEOUT the seconds to wait for a server, log() the caller's logger):
# the environment of a local Prefect server, start a server in its own process group, wait until
# it is healthy, is a process alive, stop a process group (logging it when it runs), is a
# loopback port busy.

# prefect_server_env STATE PORT DB: export the settings of a Prefect server on 127.0.0.1:PORT and
# of the processes started with it (no machine-wide profile is read or changed): PREFECT_HOME =
# STATE, the SQLite database STATE/DB, analytics and promotional content off; no API URL or key
# is inherited.
prefect_server_env() {
  local state="$1" port="$2" db="$3"
  export PREFECT_HOME="$state"
  export PREFECT_PROFILES_PATH="$state/profiles.toml"
  export PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$state/$db"
  export PREFECT_SERVER_ANALYTICS_ENABLED=false
  export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
  export PREFECT_SERVER_API_HOST=127.0.0.1
  export PREFECT_SERVER_API_PORT="$port"
  export DO_NOT_TRACK=1
  unset PREFECT_API_URL PREFECT_API_KEY
}

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# stop_group PID SECONDS SIGNAL...: send each signal to the process group (1 s apart) until
# the leader exits; SIGKILL after SECONDS.
stop_group() {
  local pid="$1" grace="$2"
  shift 2
  alive "$pid" || return 0
  for sig in "$@"; do
    kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$pid" || break; sleep 0.1; done
  done
  local waited=0
  while alive "$pid" && ((waited < grace * 10)); do sleep 0.1; waited=$((waited + 1)); done
  if alive "$pid"; then
    kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# stop_if_alive PID WHAT SIGNAL...: log "stopping WHAT" and stop_group PID (20 s grace) if it runs
stop_if_alive() {
  local pid="$1" what="$2"
  shift 2
  if alive "$pid"; then
    log "stopping $what"
    stop_group "$pid" 20 "$@"
  fi
}

# port_busy PORT: true when something listens on 127.0.0.1:PORT
port_busy() {
  "$BIN/python" -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

# healthy URL: true when URL answers (3 s timeout)
healthy() {
  "$BIN/python" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" 2>/dev/null
}

# start_bg LOG CMD...: start CMD in the background in its own process group (job control on
# while forking: the child neither shares the terminal's Ctrl-C nor ignores SIGINT, as background
# commands of a script otherwise do), so Ctrl-C reaches only this script, which stops the
# children in order. Sets BG_PID.
start_bg() {
  local out="$1"
  shift
  set -m
  "$@" >>"$out" 2>&1 &
  BG_PID=$!
  set +m
}

# wait_healthy NAME PID URL LOG: wait up to TIMEOUT s for URL; exit 1 showing LOG's tail if the
# process dies first
wait_healthy() {
  local name="$1" pid="$2" url="$3" out="$4" waited=0
  until healthy "$url"; do
    if ! alive "$pid"; then
      log "error: the $name exited; last lines of $out:" >&2
      tail -n 30 "$out" >&2
      exit 1
    fi
    if ((waited >= TIMEOUT)); then
      log "error: the $name is not healthy after ${TIMEOUT} s (see $out)" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "$name healthy after ~${waited} s (pid $pid)"
}
