#!/usr/bin/env bash
# Server memory per idle WebSocket channel: starts the release echo server (examples/autobahn),
# opens N idle connections with examples/idle_clients, and reads the server's RSS from /proc
# before and after.
#
#   scripts/idle-rss.sh [N=5000] [MESSAGE_BYTES=0]
#
# With MESSAGE_BYTES, each connection first echoes one message of that size (buffers that
# grew must shrink back when idle).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5000}"
MSG="${2:-0}"
PORT="${PORT:-9107}"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --example autobahn --example idle_clients >/dev/null 2>&1
PORT=$PORT ./target/release/examples/autobahn >/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 0.5
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
BEFORE=$(rss)
FIFO=$(mktemp -u)
mkfifo "$FIFO"
./target/release/examples/idle_clients "ws://127.0.0.1:$PORT/" "$N" "$MSG" < "$FIFO" > /tmp/idle-clients.out &
CLIENT=$!
exec 3>"$FIFO"
for _ in $(seq 1 600); do
  grep -q ready /tmp/idle-clients.out 2>/dev/null && break
  kill -0 $CLIENT 2>/dev/null || { echo "client failed"; exit 1; }
  sleep 0.2
done
sleep 2
AFTER=$(rss)
exec 3>&-
wait $CLIENT || true
rm -f "$FIFO"
echo "connections: $N, message: $MSG bytes"
echo "server RSS before: ${BEFORE} KiB, with connections: ${AFTER} KiB"
awk -v a="$AFTER" -v b="$BEFORE" -v n="$N" 'BEGIN { printf "per connection: %.2f KiB\n", (a - b) / n }'
