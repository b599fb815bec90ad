# Shell helpers shared by infra/local/ui.sh and infra/local/serve_scheduler.sh (sourced; $BIN is
# the virtualenv's bin folder, TIMEOUT the seconds to wait for a server, log() the caller's logger):
# start a server in its own process group, wait until it is healthy, is a process alive, stop a
# process group, is a loopback port busy.

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
