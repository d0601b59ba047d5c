#!/usr/bin/env bash
# Code footprint of a WebSocket round trip: runs one of benches/compare's servers under
# callgrind (instruction addresses and a simulated cache: 32 KiB, 8-way L1i) while the load
# client plays ping-pong with it (or echo 16 B over 64 connections), and prints per round trip
# (message) the instructions, the simulated L1i misses and the 64-byte code lines executed, and
# the functions with the most of those lines and of those instructions, and the atomic
# read-modify-write instructions by function (scripts/footprint.py).
# Repeatable run after run, unlike wall-clock figures.
#
#   scripts/footprint.sh [SERVER=webchan]      # e.g. fastwebsockets, axum, tungstenite
#   SCENARIO=echo16 scripts/footprint.sh        # 64 connections x 8 in flight instead
#   SCENARIO=echo16k scripts/footprint.sh       # 16 KiB messages, 16 connections x 1
#   TOOL=lackey scripts/footprint.sh [SERVER]   # every line touched, code and data (below)
#
# With TOOL=lackey the server runs under valgrind's lackey, which traces every instruction and
# memory access, and scripts/lines.py counts per round trip the distinct 64-byte lines of code
# and of data (stack, heap, static) and the 4 KiB pages: what the caches must fetch again when
# the load client and the kernel ran on the core in between. Slower (~300 round trips/s) and
# its trace takes ~100 MB (deleted after).
#
# Needs valgrind and python3. Takes ~1 minute after the build.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/compare-common.sh
source "$ROOT/scripts/compare-common.sh"
SERVER="${1:-webchan}"
SCENARIO="${SCENARIO:-pingpong}"
PORT="${PORT:-9190}"
OUT="${OUT:-$ROOT/target/footprint}"
build_compare
mkdir -p "$OUT"
case "$SCENARIO" in
  pingpong) ARGS="--conns 1 --inflight 1 --size 16" ;;
  echo16) ARGS="--conns 64 --inflight 8 --size 16" ;;
  echo16k) ARGS="--conns 16 --inflight 1 --size 16384" ;;
  *) echo "SCENARIO: pingpong, echo16 or echo16k" >&2; exit 2 ;;
esac
if [ "${TOOL:-callgrind}" = lackey ]; then
  TRACE="$OUT/lackey.$SERVER.$SCENARIO"
  taskset -c 0 valgrind --tool=lackey --trace-mem=yes --log-file="$TRACE" \
    "$BIN/servers" "$SERVER" "$PORT" > "$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill $SERVER_PID 2>/dev/null || true; rm -f "$TRACE"' EXIT
  for _ in $(seq 1 150); do grep -q ready "$OUT/server.log" && break; sleep 0.2; done
  grep -q ready "$OUT/server.log" || { echo "the server did not start" >&2; exit 1; }
  # Two runs (the first warms the server up under lackey); every round trip in the trace is
  # one the count below knows of, and lines.py leaves out the first tenth.
  MESSAGES=0
  for DURATION in 1 3; do
    # shellcheck disable=SC2086
    RESULT=$(taskset -c 1 "$BIN/load" echo $ARGS --duration "$DURATION" --port "$PORT" | tail -n 1)
    ERRORS=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$RESULT")
    [ "${ERRORS:-1}" = 0 ] || { echo "load errors: $RESULT" >&2; exit 1; }
    MESSAGES=$((MESSAGES + $(sed -n 's/.* messages=\([0-9]*\).*/\1/p' <<< "$RESULT")))
  done
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  echo "server: $SERVER, scenario: $SCENARIO, messages: $MESSAGES (under lackey)"
  python3 "$ROOT/scripts/lines.py" "$TRACE" "$MESSAGES" "$BIN/servers"
  exit 0
fi
PROFILE="$OUT/callgrind.$SERVER.$SCENARIO"
rm -f "$PROFILE" "$PROFILE".*
taskset -c 0 valgrind --tool=callgrind --dump-instr=yes --cache-sim=yes \
  --callgrind-out-file="$PROFILE" "$BIN/servers" "$SERVER" "$PORT" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do grep -q ready "$OUT/server.log" && break; sleep 0.2; done
grep -q ready "$OUT/server.log" || { echo "the server did not start" >&2; exit 1; }
# A warm-up, then counters zeroed, then the measured run, then a dump of that run alone.
# shellcheck disable=SC2086
taskset -c 1 "$BIN/load" echo $ARGS --duration 2 --port "$PORT" > /dev/null
callgrind_control -z "$SERVER_PID" > /dev/null 2>&1
# shellcheck disable=SC2086
RESULT=$(taskset -c 1 "$BIN/load" echo $ARGS --duration 4 --port "$PORT" | tail -n 1)
callgrind_control -d "$SERVER_PID" > /dev/null 2>&1
sleep 1
MESSAGES=$(sed -n 's/.* messages=\([0-9]*\).*/\1/p' <<< "$RESULT")
ERRORS=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$RESULT")
[ "${ERRORS:-1}" = 0 ] || { echo "load errors: $RESULT" >&2; exit 1; }
echo "server: $SERVER, scenario: $SCENARIO, messages: $MESSAGES (under valgrind)"
python3 "$ROOT/scripts/footprint.py" "$PROFILE.1" "$MESSAGES"
