#!/usr/bin/env bash
# Loopback comparison of webchan against axum, tokio-tungstenite (per-message send and
# batched), fastwebsockets and uWebSockets (C++), of webchan's HTTP streams against raw
# hyper, and of its file sends against hyper + tokio::fs + ReaderStream (issue 5).
#
#   scripts/bench.sh [SCENARIO...]        # default: all scenarios
#   QUICK=1 scripts/bench.sh              # D=2 s, R=1 round: proves the harness works
#   D=10 R=5 scripts/bench.sh echo16      # longer runs, more rounds, one scenario
#   IDLE_N=19000 SERVERS=webchan scripts/bench.sh idle
#   D=2 R=30 SERVERS="webchan fastwebsockets axum" scripts/bench.sh pingpong echo16k
#                                         # many short rounds: the ratio goals' verdicts with
#                                         # a 95 % confidence interval (from R=6 on, see report)
#
# Scenarios (servers):
#   echo16 pingpong echo16k echo1m   WS echo (webchan tungstenite tungstenite-batched axum
#   echo16ktext                      fastwebsockets uws); echo16ktext: 16 KiB text messages
#   stream1k stream64k               HTTP stream of 16 MiB bodies (webchan-stream hyper-stream)
#   file filelen                     downloads of one FILE_MIB file of random bytes, chunked /
#                                    with its Content-Length declared (webchan-file hyper-file)
#   idle                             IDLE_N idle WebSockets: server RSS per connection (WS servers)
#   idlehttp                         IDLE_N idle HTTP streams, one 64 B chunk each and then
#                                    held open: server RSS per stream (webchan-idle hyper-idle)
# Environment: D (seconds per run, default 5), R (rounds, default 3), IDLE_N (connections for
# `idle` and `idlehttp`, default 5000; at most `ulimit -Hn` - 100: the script stops at once,
# saying so, above that), FILE_MIB (size of the file, default 64), FILE_CAP (read size of
# hyper-file's ReaderStream, default 16384: webchan's file read size; ReaderStream::new reads
# 4096), SERVERS (restrict to these servers, space-separated), UWS (0: no uws server),
# UWS_SRC (a directory holding uWebSockets v0.14's uWS.h and sources, instead of fetching
# them), SERVER_CORE (0), LOAD_CORE (1), PORT (first port, 9400), OUT (results directory).
#
# uws: benches/compare/uws/echo.cpp, built with g++ against uWebSockets v0.14.6, the C++
# sources that PyPI's `uWebSockets` 0.14.6a2 sdist (Python bindings) ships: `pip3 download`
# fetches it once into $CARGO_TARGET_DIR/uws (Debian packages no uWebSockets; the current
# v20 C++ sources are on no registry this machine reaches, npm holding only prebuilt Node.js
# addons of uWebSockets.js). v0.14 is uWebSockets of 2018, not today's. Needs g++ and the
# OpenSSL and zlib headers; when anything is missing the script says so and runs without uws.
#
# Builds benches/compare (its own cargo project: axum and fastwebsockets never enter the main
# crate's build) in release mode, then for each round, each scenario and each server (the
# order of the servers rotates each round): starts the server pinned to SERVER_CORE, runs the
# load client pinned to LOAD_CORE (both on SERVER_CORE for ping-pong) for D seconds, and keeps
# the client's result line (rate, server CPU time and RSS from /proc; for files the peak RSS,
# VmHWM). Prints markdown tables of the medians and exits 0 only when every run completed
# without errors (every echo, body and chunk is verified by the load client).
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
FILE_MIB=${FILE_MIB:-64}
FILE_CAP=${FILE_CAP:-16384}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-9400}
WS_SERVERS=(webchan tungstenite tungstenite-batched axum fastwebsockets uws)
STREAM_SERVERS=(webchan-stream hyper-stream)
FILE_SERVERS=(webchan-file hyper-file)
IDLE_HTTP_SERVERS=(webchan-idle hyper-idle)
ALL_SCENARIOS=(echo16 pingpong echo16k echo16ktext echo1m stream1k stream64k file filelen idle idlehttp)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL_SCENARIOS[@]}"); fi
selected() { # is any of these scenarios selected?
  local s t
  for s in "${SCENARIOS[@]}"; do for t in "$@"; do [ "$s" = "$t" ] && return 0; done; done
  return 1
}
wanted() { [ -z "${SERVERS:-}" ] || [[ " $SERVERS " == *" $1 "* ]]; }

# Enough descriptors for IDLE_N connections: the load client and the server each hold one per
# connection, plus a few of their own. The hard limit cannot be raised without privileges.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if selected idle idlehttp && [ "$(ulimit -n)" != unlimited ]; then
  max_idle=$(($(ulimit -n) - 100))
  if [ "$IDLE_N" -gt "$max_idle" ]; then
    echo "IDLE_N=$IDLE_N is above what this machine allows: each of the two processes needs a" >&2
    echo "descriptor per connection and ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn))," >&2
    echo "so IDLE_N can be at most $max_idle here. Raise the hard limit where that is allowed" >&2
    echo "(ulimit -Hn with CAP_SYS_RESOURCE, limits.conf, systemd's LimitNOFILE) or run with IDLE_N=$max_idle." >&2
    exit 2
  fi
fi

# shellcheck source=scripts/compare-common.sh
. "$ROOT/scripts/compare-common.sh"
build_compare

OUT=${OUT:-$CARGO_TARGET_DIR/bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"

# uWebSockets: fetch the v0.14 sources once (PyPI sdist), build the echo server with g++.
UWS_BIN=""
UWS_NOTE=""
build_uws() {
  local dir="$CARGO_TARGET_DIR/uws" src="${UWS_SRC:-}"
  if [ -z "$src" ]; then
    src=$(ls -d "$dir"/uWebSockets-*/uWebSockets/src 2>/dev/null | head -n 1)
  fi
  if [ -z "$src" ]; then
    command -v pip3 >/dev/null || { UWS_NOTE="no pip3 to fetch the uWebSockets sources"; return 1; }
    mkdir -p "$dir"
    echo "fetching uWebSockets v0.14.6 sources (PyPI sdist uWebSockets==0.14.6a2)..." >&2
    if ! pip3 download --quiet --no-deps --no-binary :all: -d "$dir" uwebsockets==0.14.6a2 >&2; then
      UWS_NOTE="pip3 download of uwebsockets==0.14.6a2 failed"
      return 1
    fi
    tar xzf "$dir"/uWebSockets-0.14.6a2.tar.gz -C "$dir" || { UWS_NOTE="cannot unpack the sdist"; return 1; }
    src=$(ls -d "$dir"/uWebSockets-*/uWebSockets/src 2>/dev/null | head -n 1)
  fi
  [ -f "$src/uWS.h" ] || { UWS_NOTE="no uWS.h in ${src:-$dir}"; return 1; }
  command -v g++ >/dev/null || { UWS_NOTE="no g++"; return 1; }
  [ -f /usr/include/openssl/ssl.h ] && [ -f /usr/include/zlib.h ] ||
    { UWS_NOTE="no OpenSSL or zlib headers (apt-get install libssl-dev zlib1g-dev)"; return 1; }
  local bin="$dir/echo" cpp="$ROOT/benches/compare/uws/echo.cpp"
  if [ ! -x "$bin" ] || [ "$cpp" -nt "$bin" ]; then
    echo "building uws/echo.cpp (g++ -O2)..." >&2
    # shellcheck disable=SC2046
    if ! g++ -O2 -DNDEBUG -std=c++17 -I"$src" -o "$bin" "$cpp" $(ls "$src"/*.cpp) -lssl -lcrypto -lz -lpthread >&2; then
      UWS_NOTE="g++ failed"
      return 1
    fi
  fi
  UWS_BIN=$bin
}
if [ "${UWS:-1}" = 0 ]; then
  UWS_NOTE="UWS=0"
elif selected echo16 pingpong echo16k echo16ktext echo1m idle && wanted uws; then
  build_uws || true
fi
if [ -n "$UWS_NOTE" ] && wanted uws && selected echo16 pingpong echo16k echo16ktext echo1m idle; then
  echo "note: no uws server in this run: $UWS_NOTE" >&2
fi
if [ -z "$UWS_BIN" ]; then
  WS_SERVERS=(webchan tungstenite tungstenite-batched axum fastwebsockets)
fi

# The file for `file` and `filelen`: random bytes, made once per run, removed at the end.
FILE=""
if selected file filelen; then
  FILE="$OUT/file.bin"
  head -c $((FILE_MIB << 20)) /dev/urandom > "$FILE" || { echo "cannot write $FILE" >&2; exit 1; }
  trap 'rm -f "$FILE"' EXIT
fi

# Arguments of the load client per scenario.
load_args() {
  case "$1" in
    echo16) echo "echo --conns 64 --inflight 8 --size 16 --duration $D" ;;
    pingpong) echo "echo --conns 1 --inflight 1 --size 16 --duration $D" ;;
    echo16k) echo "echo --conns 16 --inflight 1 --size 16384 --duration $D" ;;
    echo16ktext) echo "echo --conns 16 --inflight 1 --size 16384 --text --duration $D" ;;
    echo1m) echo "echo --conns 4 --inflight 1 --size 1048576 --duration $D" ;;
    stream1k) echo "stream --conns 16 --chunk 1024 --total 16777216 --duration $D" ;;
    stream64k) echo "stream --conns 16 --chunk 65536 --total 16777216 --duration $D" ;;
    file) echo "stream --file $FILE --query cap=$FILE_CAP --conns 16 --duration $D" ;;
    filelen) echo "stream --file $FILE --query length=1&cap=$FILE_CAP --conns 16 --duration $D" ;;
    idle) echo "idle --conns $IDLE_N --size 65536 --sources 20 --settle 2" ;;
    idlehttp) echo "idlehttp --conns $IDLE_N --chunk 64 --sources 20 --settle 2" ;;
    *) return 1 ;;
  esac
}

servers_for() {
  local list
  case "$1" in
    stream*) list=("${STREAM_SERVERS[@]}") ;;
    file*) list=("${FILE_SERVERS[@]}") ;;
    idlehttp) list=("${IDLE_HTTP_SERVERS[@]}") ;;
    *) list=("${WS_SERVERS[@]}") ;;
  esac
  for s in "${list[@]}"; do
    if wanted "$s"; then echo "$s"; fi
  done
}

for scenario in "${SCENARIOS[@]}"; do
  load_args "$scenario" >/dev/null || { echo "unknown scenario: $scenario" >&2; exit 2; }
done

machine() {
  machine_common
  echo "D=${D}s R=$R IDLE_N=$IDLE_N FILE_MIB=$FILE_MIB FILE_CAP=$FILE_CAP server core $SERVER_CORE, load core $LOAD_CORE"
  echo "uws: $( [ -n "$UWS_BIN" ] && echo "uWebSockets v0.14.6 (C++, PyPI sdist uWebSockets 0.14.6a2), g++ $(g++ -dumpfullversion 2>/dev/null)" || echo "not in this run${UWS_NOTE:+ ($UWS_NOTE)}")"
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

  local cmd=("$BIN/servers" "$server" "$port")
  case "$server" in
    uws) cmd=("$UWS_BIN" "$port") ;;
    *-file) cmd+=("$FILE") ;;
  esac
  taskset -c "$score" "${cmd[@]}" > "$OUT/logs/$tag.server.log" 2>&1 &
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
  timeout $((D + 90 + IDLE_N / 500)) taskset -c "$lcore" "$BIN/load" $(load_args "$scenario") --port "$port" --pid "$spid" \
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
