#!/usr/bin/env bash
# Interleaved rounds of the webchan echo server as committed, without keepalive (KEEPALIVE=0),
# echoing inside its connection task (ECHO_INSIDE=1, needs echo-inside.patch applied: see
# there), both, and fastwebsockets; then per variant the median rate, the server's user time
# per message and the per-round ratio to fastwebsockets with a distribution-free 95 % interval
# for its median. Ping-pong runs server and load client on core 0, as scripts/bench.sh does;
# the 16 KiB echo puts the client on core 1. Exit 1 on any load error.
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
    env "${vars[@]}" taskset -c 0 "$BIN/servers" "$server" "$PORT" > "$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do grep -q ready "$OUT/server.log" && break; sleep 0.1; done
    # shellcheck disable=SC2086
    result=$(taskset -c "$LOAD_CORE" "$BIN/load" echo $ARGS --duration "$SECONDS_PER_RUN" \
      --port "$PORT" --pid "$pid" | tail -n 1)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "r$round $variant $result" | tee -a "$OUT/rounds"
  done
done
python3 - "$OUT/rounds" <<'PY'
import math, re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, variant = line.split()[:2]
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    rows.setdefault(r, {})[variant] = kv
def interval(xs):
    xs, n = sorted(xs), len(xs)
    for k in range(n // 2, -1, -1):
        if sum(math.comb(n, i) for i in range(k, n - k + 1)) / 2 ** n >= 0.95:
            return xs[k], xs[n - 1 - k]
    return xs[0], xs[-1]
errors = 0
for variant in ["webchan", "keepalive-off", "inside", "inside-keepalive-off", "fastwebsockets"]:
    ratios = [float(v[variant]["rate"]) / float(v["fastwebsockets"]["rate"]) for v in rows.values()]
    errors += sum(int(v[variant]["errors"]) for v in rows.values())
    lo, hi = interval(ratios)
    rate = statistics.median(float(v[variant]["rate"]) for v in rows.values())
    user = statistics.median(float(v[variant]["user_us_per_msg"]) for v in rows.values())
    print(f"{variant:22s} {rate:9.0f}/s  user {user:.3f} us  x fastwebsockets {statistics.median(ratios):.3f} (95 % CI {lo:.3f}-{hi:.3f})")
sys.exit(1 if errors else 0)
PY
