#!/usr/bin/env bash
# Interleaved rounds of the webchan echo server as committed, without keepalive (KEEPALIVE=0),
# echoing inside its connection task (ECHO_INSIDE=1, needs echo-inside.patch applied: see
# there), both, and fastwebsockets, in that order every round; then per variant the median
# rate and the per-round ratio to fastwebsockets with a distribution-free 95 % interval for its
# median (`report --vs`). Each run's line (the load client's, with the server's user time per
# message) is printed as it ends. Ping-pong runs server and load client on core 0, as
# scripts/bench.sh does; the 16 KiB echo puts the client on core 1. Exit 1 if any run failed
# or saw an error.
#
#   benches/compare/experiments/bound.sh pingpong|echo16k [ROUNDS=12] [SECONDS=2]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
# shellcheck source=scripts/compare-common.sh
source "$ROOT/scripts/compare-common.sh"
SCENARIO="${1:?pingpong or echo16k}"
ROUNDS="${2:-12}"
SECONDS_PER_RUN="${3:-2}"
case "$SCENARIO" in
  pingpong) ARGS="--conns 1 --inflight 1 --size 16"; LOAD_CORE=0 ;;
  echo16k) ARGS="--conns 16 --inflight 1 --size 16384"; LOAD_CORE=1 ;;
  *) echo "pingpong or echo16k" >&2; exit 2 ;;
esac
build_compare
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
PORT=9411
failures=0
for round in $(seq 1 "$ROUNDS"); do
  for variant in webchan keepalive-off inside inside-keepalive-off fastwebsockets; do
    server=webchan
    vars=()
    case "$variant" in
      keepalive-off) vars=(KEEPALIVE=0) ;;
      inside) vars=(ECHO_INSIDE=1) ;;
      inside-keepalive-off) vars=(ECHO_INSIDE=1 KEEPALIVE=0) ;;
      fastwebsockets) server=fastwebsockets ;;
    esac
    PORT=$((PORT + 1))
    # Emptied before the server starts: the redirection below happens in the child, and the
    # previous server's "ready" must not be taken for this one's.
    : > "$OUT/server.log"
    env "${vars[@]}" taskset -c 0 "$BIN/servers" "$server" "$PORT" > "$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do grep -q ready "$OUT/server.log" && break; sleep 0.1; done
    # shellcheck disable=SC2086
    result=$(taskset -c "$LOAD_CORE" "$BIN/load" echo $ARGS --duration "$SECONDS_PER_RUN" \
      --port "$PORT" --pid "$pid" | tail -n 1) || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "r$round $variant $result"
    rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<< "$result")
    if [ -z "$rate" ] || ! grep -q ' errors=0' <<< "$result"; then
      echo "r$round $variant: failed" >&2
      failures=$((failures + 1))
      continue
    fi
    printf '%s\t%s\t%s\n' "$round" "$variant" "$rate" >> "$OUT/rounds.tsv"
  done
done
# Each variant's median and its ratio to fastwebsockets round by round, with the interval
# rule of the bench's verdicts (benches/compare's `report`).
"$BIN/report" --vs fastwebsockets "$OUT/rounds.tsv"
[ "$failures" -eq 0 ]
