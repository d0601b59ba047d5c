#!/usr/bin/env bash
# Loopback comparison of webchan against axum, tokio-tungstenite (per-message send and
# batched) and fastwebsockets, and of webchan's HTTP streams against raw hyper (issue 5).
#
#   scripts/bench.sh [SCENARIO...]        # default: all scenarios
#   QUICK=1 scripts/bench.sh              # D=2 s, R=1 round: proves the harness works
#   D=10 R=5 scripts/bench.sh echo16      # longer runs, more rounds, one scenario
#
# Scenarios: echo16 pingpong echo16k echo1m stream1k stream64k idle.
# Environment: D (seconds per run, default 5), R (rounds, default 3), IDLE_N (connections for
# `idle`, default 5000), SERVERS (restrict to these servers, space-separated), SERVER_CORE (0),
# LOAD_CORE (1), PORT (first port, 9400), OUT (results directory).
#
# Builds benches/compare (its own cargo project: axum and fastwebsockets never enter the main
# crate's build) in release mode, then for each round, each scenario and each server (the
# order of the servers rotates each round): starts the server pinned to SERVER_CORE, runs the
# load client pinned to LOAD_CORE (both on SERVER_CORE for ping-pong) for D seconds, and keeps
# the client's result line (rate, server CPU time and RSS from /proc). Prints markdown tables
# of the medians and exits 0 only when every run completed without errors.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${QUICK:-0}" = 1 ]; then
  D=${D:-2}
  R=${R:-1}
else
  D=${D:-5}
  R=${R:-3}
fi
IDLE_N=${IDLE_N:-5000}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-9400}
WS_SERVERS=(webchan tungstenite tungstenite-batched axum fastwebsockets)
STREAM_SERVERS=(webchan-stream hyper-stream)
ALL_SCENARIOS=(echo16 pingpong echo16k echo1m stream1k stream64k idle)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL_SCENARIOS[@]}"); fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/benches/compare/target}"
echo "building benches/compare (release)..." >&2
if ! cargo build --release --manifest-path "$ROOT/benches/compare/Cargo.toml" >&2; then
  echo "build failed" >&2
  exit 1
fi
BIN="$CARGO_TARGET_DIR/release"

OUT=${OUT:-$CARGO_TARGET_DIR/bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"

# Enough descriptors for IDLE_N connections (client and server each hold one per connection).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_N + 200)) ]; then
  echo "warning: ulimit -n is $(ulimit -n), below IDLE_N=$IDLE_N + 200" >&2
fi

# Arguments of the load client per scenario.
load_args() {
  case "$1" in
    echo16) echo "echo --conns 64 --inflight 8 --size 16 --duration $D" ;;
    pingpong) echo "echo --conns 1 --inflight 1 --size 16 --duration $D" ;;
    echo16k) echo "echo --conns 16 --inflight 1 --size 16384 --duration $D" ;;
    echo1m) echo "echo --conns 4 --inflight 1 --size 1048576 --duration $D" ;;
    stream1k) echo "stream --conns 16 --chunk 1024 --total 16777216 --duration $D" ;;
    stream64k) echo "stream --conns 16 --chunk 65536 --total 16777216 --duration $D" ;;
    idle) echo "idle --conns $IDLE_N --size 65536 --sources 20 --settle 2" ;;
    *) return 1 ;;
  esac
}

servers_for() {
  local list
  case "$1" in
    stream*) list=("${STREAM_SERVERS[@]}") ;;
    *) list=("${WS_SERVERS[@]}") ;;
  esac
  for s in "${list[@]}"; do
    if [ -z "${SERVERS:-}" ] || [[ " $SERVERS " == *" $s "* ]]; then echo "$s"; fi
  done
}

for scenario in "${SCENARIOS[@]}"; do
  load_args "$scenario" >/dev/null || { echo "unknown scenario: $scenario" >&2; exit 2; }
done

machine() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "webchan: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$( [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ] && echo ' (src/ with uncommitted changes)')"
  echo "cpu: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -r)"
  echo "D=${D}s R=$R IDLE_N=$IDLE_N server core $SERVER_CORE, load core $LOAD_CORE"
}
machine | tee "$OUT/machine.txt" >&2
echo "load at start: $(uptime | sed 's/.*load average/load average/')" | tee -a "$OUT/machine.txt" >&2

run=0
failures=0
run_one() {
  local round=$1 scenario=$2 server=$3
  local port=$((PORT + run % 100))
  local tag="r${round}-${scenario}-${server}"
  local score=$SERVER_CORE lcore=$LOAD_CORE
  [ "$scenario" = pingpong ] && lcore=$SERVER_CORE
  run=$((run + 1))

  taskset -c "$score" "$BIN/servers" "$server" "$port" > "$OUT/logs/$tag.server.log" 2>&1 &
  local spid=$!
  local waited=0
  until grep -q '^ready' "$OUT/logs/$tag.server.log" 2>/dev/null; do
    if ! kill -0 "$spid" 2>/dev/null || [ $waited -ge 100 ]; then
      echo "$tag: server did not start" >&2
      kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$scenario" "$server" 98 "errors=1" >> "$RESULTS"
      failures=$((failures + 1))
      return
    fi
    sleep 0.1
    waited=$((waited + 1))
  done

  # shellcheck disable=SC2046
  timeout $((D + 90)) taskset -c "$lcore" "$BIN/load" $(load_args "$scenario") --port "$port" --pid "$spid" \
    > "$OUT/logs/$tag.load.out" 2> "$OUT/logs/$tag.load.err"
  local rc=$?
  if ! kill -0 "$spid" 2>/dev/null; then
    echo "$tag: the server exited during the run (see $OUT/logs/$tag.server.log)" >&2
    rc=99
  fi
  kill "$spid" 2>/dev/null
  wait "$spid" 2>/dev/null
  local line
  line=$(tail -n 1 "$OUT/logs/$tag.load.out")
  [ -n "$line" ] || line="errors=1"
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$scenario" "$server" "$rc" "$line" >> "$RESULTS"
  if [ $rc -ne 0 ]; then
    failures=$((failures + 1))
    echo "$tag: FAILED (exit $rc): $(head -n 3 "$OUT/logs/$tag.load.err" | tr '\n' ' ')" >&2
  else
    echo "$tag: $line" >&2
  fi
}

for round in $(seq 1 "$R"); do
  for scenario in "${SCENARIOS[@]}"; do
    mapfile -t servers < <(servers_for "$scenario")
    n=${#servers[@]}
    [ "$n" -gt 0 ] || continue
    # Round robin: each round starts with a different server.
    for i in $(seq 0 $((n - 1))); do
      run_one "$round" "$scenario" "${servers[$(((i + round - 1) % n))]}"
    done
  done
done

echo "load at end: $(uptime | sed 's/.*load average/load average/')" | tee -a "$OUT/machine.txt" >&2
echo
cat "$OUT/machine.txt"
echo
"$BIN/report" "$RESULTS" | tee "$OUT/table.md"
status=${PIPESTATUS[0]}
echo "results: $RESULTS"
if [ "$failures" -gt 0 ] || [ "$status" -ne 0 ]; then
  echo "$failures run(s) failed" >&2
  exit 1
fi
exit 0
