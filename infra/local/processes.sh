# Shell helpers shared by infra/local/ui.sh and infra/local/serve_scheduler.sh (sourced; $BIN is
# the virtualenv's bin folder): is a process alive, stop a process group, is a loopback port busy.

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
