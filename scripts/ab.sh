#!/usr/bin/env bash
# Interleaved A/B of two webchan builds: the working tree ("new") against revision REV
# ("old", built in a git worktree), with a peer server as a third runner in every round, on
# one WebSocket scenario of scripts/bench.sh. Prints per-round paired ratios (new/old,
# new/peer, old/peer): their median and a distribution-free 95 % confidence interval. A
# wall-clock A/B in one sitting is the only way to tell a change's cost from the host's phase
# (two runs of bench.sh minutes apart can differ by 30 % on this machine).
#
#   scripts/ab.sh REV [SCENARIO]      # SCENARIO: pingpong (default), echo16, echo16k,
#                                     #           echo16ktext, echo1m
#   R=30 D=2 PEER=fastwebsockets scripts/ab.sh HEAD~3 echo16k
#
# R rounds (default 20) of D seconds (default 2); the order of the three rotates each round.
# Server on core SERVER_CORE (0), load client on LOAD_CORE (1; both on SERVER_CORE for
# ping-pong). Exits 1 if any run failed (the load client checks every byte). Results in
# benches/compare/target/ab-*/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REV=${1:?usage: scripts/ab.sh REV [SCENARIO]}
SCENARIO=${2:-pingpong}
R=${R:-20}
D=${D:-2}
PEER=${PEER:-fastwebsockets}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-9500}
case "$SCENARIO" in
  echo16) LOAD_ARGS="--conns 64 --inflight 8 --size 16" ;;
  pingpong) LOAD_ARGS="--conns 1 --inflight 1 --size 16"; LOAD_CORE=$SERVER_CORE ;;
  echo16k) LOAD_ARGS="--conns 16 --inflight 1 --size 16384" ;;
  echo16ktext) LOAD_ARGS="--conns 16 --inflight 1 --size 16384 --text" ;;
  echo1m) LOAD_ARGS="--conns 4 --inflight 1 --size 1048576" ;;
  *) echo "unknown scenario: $SCENARIO" >&2; exit 2 ;;
esac

# shellcheck source=scripts/compare-common.sh
. "$ROOT/scripts/compare-common.sh"
build_compare
NEW_BIN=$BIN
OLD_TREE="$ROOT/benches/compare/target/ab-tree"
git -C "$ROOT" worktree remove --force "$OLD_TREE" 2>/dev/null || rm -rf "$OLD_TREE"
git -C "$ROOT" worktree add --quiet --detach "$OLD_TREE" "$REV"
trap 'git -C "$ROOT" worktree remove --force "$OLD_TREE" 2>/dev/null || true' EXIT
echo "building $REV in $OLD_TREE..." >&2
CARGO_TARGET_DIR="$ROOT/benches/compare/target/ab-old" \
  cargo build --release --manifest-path "$OLD_TREE/benches/compare/Cargo.toml" >&2
OLD_BIN="$ROOT/benches/compare/target/ab-old/release"

OUT="$ROOT/benches/compare/target/ab-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
{
  machine_common
  echo "old: $(git -C "$ROOT" rev-parse --short "$REV"), scenario $SCENARIO, R=$R D=${D}s, peer ${PEER:-none}"
} | tee "$OUT/machine.txt" >&2

failures=0
run=0
# One run: prints "ROUND NAME RATE" into results.tsv.
run_one() {
  local round=$1 name=$2 bin=$3 server=$4
  local port=$((PORT + run % 100)) log="$OUT/r$round-$name.server.log"
  run=$((run + 1))
  taskset -c "$SERVER_CORE" "$bin/servers" "$server" "$port" > "$log" 2>&1 &
  local spid=$! waited=0
  until grep -q '^ready' "$log" 2>/dev/null; do
    if ! kill -0 "$spid" 2>/dev/null || [ $waited -ge 100 ]; then
      echo "r$round $name: server did not start" >&2
      failures=$((failures + 1))
      kill "$spid" 2>/dev/null || true
      return
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  local out
  # shellcheck disable=SC2086
  out=$(timeout $((D + 60)) taskset -c "$LOAD_CORE" "$NEW_BIN/load" echo $LOAD_ARGS \
    --duration "$D" --port "$port" --pid "$spid" 2> "$OUT/r$round-$name.load.err") || true
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  local rate errors
  rate=$(grep -o 'rate=[0-9]*' <<< "$out" | cut -d= -f2)
  errors=$(grep -o 'errors=[0-9]*' <<< "$out" | cut -d= -f2)
  if [ -z "$rate" ] || [ "${errors:-1}" != 0 ]; then
    echo "r$round $name: failed (see $OUT/r$round-$name.load.err)" >&2
    failures=$((failures + 1))
    return
  fi
  printf '%s\t%s\t%s\n' "$round" "$name" "$rate" >> "$OUT/results.tsv"
  echo "r$round $name: $rate msg/s" >&2
}

runners=(new old)
[ -n "$PEER" ] && runners+=(peer)
for round in $(seq 1 "$R"); do
  n=${#runners[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${runners[$(((i + round) % n))]}
    case "$name" in
      new) run_one "$round" new "$NEW_BIN" webchan ;;
      old) run_one "$round" old "$OLD_BIN" webchan ;;
      peer) run_one "$round" peer "$NEW_BIN" "$PEER" ;;
    esac
  done
done

# The medians and the paired ratios with their intervals: benches/compare's `report`, whose
# interval rule the bench's verdicts use too.
"$NEW_BIN/report" --ab "$OUT/results.tsv"
echo "results: $OUT/results.tsv" >&2
[ "$failures" -eq 0 ]
