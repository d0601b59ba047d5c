# shellcheck shell=bash
# What scripts/autobahn.sh and scripts/interop.sh share: sourced by both.

# start_example EXAMPLE LOG [VAR=VALUE ...]: starts ./target/release/examples/EXAMPLE in the
# background on a port the system chooses (PORT=0), with the given environment, its output in
# LOG, and waits for the address it prints once bound ("... ws://127.0.0.1:PORT"). Sets
# EXAMPLE_PID and EXAMPLE_PORT; returns 1 (EXAMPLE_PORT empty) if the example exited or said
# nothing within 10 s. No port is picked in advance, so none can be taken meanwhile by
# another listener, whose connection would pass for the example's.
start_example() {
  local example=$1 log=$2
  shift 2
  # Emptied here, not by the redirection below, which happens in the child: a log reused from
  # an earlier example could otherwise still show that one's address at the first look.
  : > "$log"
  env "$@" PORT=0 "./target/release/examples/$example" > "$log" 2>&1 &
  EXAMPLE_PID=$!
  EXAMPLE_PORT=
  for _ in $(seq 1 100); do
    EXAMPLE_PORT=$(sed -n '/ws:\/\/127\.0\.0\.1:[0-9]/{s|.*ws://127\.0\.0\.1:\([0-9]*\).*|\1|p;q}' "$log")
    [ -n "$EXAMPLE_PORT" ] && return 0
    kill -0 "$EXAMPLE_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
