#!/usr/bin/env bash
# Scale: N concurrent idle WebSocket channels (default 50,000) open at the same time on this
# machine, each one proven to work (an echo verified byte for byte), and the server's RSS per
# connection measured.
#
#   scripts/scale.sh                       # N=50000 over PROCS=4 server processes
#   N=2000 PROCS=2 scripts/scale.sh        # small: proves the harness works
#
# Why several server processes and not one: a process can hold at most `ulimit -n` descriptors,
# one per connection, and the hard limit here is 20,000 (`ulimit -Hn`; raising it needs
# CAP_SYS_RESOURCE, which this sandbox denies even to root: prlimit gets EPERM). One process can
# therefore hold at most ~19,900 channels, so the N channels are spread over PROCS webchan
# server processes (default 4 × 12,500), each with its own load client (which needs a
# descriptor per connection as well). The machine holds all N at once; no single process does.
#
# Steps: builds benches/compare (release); raises the soft `ulimit -n` to the hard limit and
# stops, saying why, when N/PROCS plus a margin does not fit under it; starts PROCS
# `servers webchan` processes on PORT..PORT+PROCS-1 (a current_thread tokio runtime each),
# pinned to SERVER_CORE, and waits for each one's `ready`; then starts PROCS `load idle`
# clients at the same time, pinned to LOAD_CORE, client i against server i with N/PROCS
# connections (the last one takes the remainder), each from its own SOURCES source addresses
# (client i: 127.0.0.(2 + i·SOURCES) .. 127.0.0.(1 + (i+1)·SOURCES), every socket bound to its
# address, so that no address needs more than a few hundred of the ephemeral ports; 20,000 at
# most is allowed). Each client opens its connections (64 handshakes at a time), waits SETTLE
# seconds, reads its server's RSS, has every connection echo one SIZE-byte message (verified
# byte for byte), waits SETTLE seconds again, reads the RSS again and closes them all.
# Meanwhile the script counts, once a second, the ESTABLISHED TCP connections whose local port
# is one of the server ports (the server side of each channel; `ss`), and keeps the maximum.
# SETTLE is long enough that every client has opened all of its connections before the first
# one starts closing, and short enough for webchan's default keepalive: a WebSocket from which
# nothing has arrived for 25 s gets a ping, and is dropped when nothing arrives in the 20 s
# after it. The load client does not read (so does not answer pings) while idle, so no
# connection may be silent for 45 s: open time + SETTLE + echo time must stay well under that
# (about 3 + 20 + 5 s here), and SETTLE is limited to 30 s.
#
# Prints a table per server process (connections, server RSS KiB per idle connection, KiB per
# connection after the echo, errors), the totals (the RSS growth of all the servers together
# divided by N) and the maximum of concurrent established connections, then PASS or FAIL.
# PASS only when every client exited 0 with errors=0 and that maximum reached N; exit 0 only
# on PASS. Raw result lines, logs and the per-second counts are kept under OUT (default
# benches/compare/target/scale-DATE) and its path is printed.
#
# Environment: N (total connections, 50000), PROCS (server processes, 4), PORT (first port,
# 9600), SETTLE (seconds, 20), SIZE (bytes of the echoed message, 65536), SOURCES (source
# addresses per client, 20), SERVER_CORE (0), LOAD_CORE (1), OUT (results directory).
# Every wait has a timeout, and the servers and clients left are killed on exit.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

N=${N:-50000}
PROCS=${PROCS:-4}
PORT=${PORT:-9600}
SETTLE=${SETTLE:-20}
SIZE=${SIZE:-65536}
SOURCES=${SOURCES:-20}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
MARGIN=100 # descriptors a process needs besides its connections

for v in N PROCS PORT SETTLE SIZE SOURCES; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then
    echo "$v must be a positive integer (is '${!v}')" >&2
    exit 2
  fi
done
PER=$((N / PROCS))
LAST=$((N - PER * (PROCS - 1)))
[ "$PER" -gt 0 ] || { echo "N=$N is less than PROCS=$PROCS" >&2; exit 2; }

# Descriptors: every server and every client holds one per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ $((LAST + MARGIN)) -gt "$(ulimit -n)" ]; then
  echo "N=$N over PROCS=$PROCS is $LAST connections for one process, but a process may hold only" >&2
  echo "$(ulimit -n) descriptors here (ulimit -n; hard limit $(ulimit -Hn)), $MARGIN of them kept for" >&2
  echo "its own use. Use more processes: PROCS=$(((N + $(ulimit -n) - MARGIN - 1) / ($(ulimit -n) - MARGIN))) or more." >&2
  exit 2
fi
if [ "$SETTLE" -gt 30 ]; then
  echo "SETTLE=$SETTLE: at most 30 s. webchan's default keepalive drops a WebSocket that sends" >&2
  echo "nothing for 25 + 20 s, and the load client sends nothing while it waits" >&2
  exit 2
fi
# Source addresses: 127.0.0.2 .. 127.0.0.(1 + PROCS·SOURCES), each needing LAST/SOURCES ports.
read -r PORT_LO PORT_HI < /proc/sys/net/ipv4/ip_local_port_range
if [ $((PROCS * SOURCES)) -gt 254 ]; then
  echo "PROCS=$PROCS × SOURCES=$SOURCES source addresses: more than 127.0.0.2..127.0.0.255" >&2
  exit 2
fi
if [ $(((LAST + SOURCES - 1) / SOURCES)) -gt 20000 ] ||
  [ $(((LAST + SOURCES - 1) / SOURCES)) -gt $((PORT_HI - PORT_LO + 1)) ]; then
  echo "$LAST connections over $SOURCES source addresses: more than 20,000 ephemeral ports" >&2
  echo "(of $PORT_LO-$PORT_HI) for one address: raise SOURCES" >&2
  exit 2
fi
if [ $((PORT + PROCS - 1)) -ge "$PORT_LO" ] && [ "$PORT" -le "$PORT_HI" ]; then
  echo "ports $PORT..$((PORT + PROCS - 1)) overlap the ephemeral range $PORT_LO-$PORT_HI" >&2
  echo "(the count of server-side connections by local port would be wrong): change PORT" >&2
  exit 2
fi
if [ $((PORT + PROCS - 1)) -gt 65535 ]; then
  echo "PORT=$PORT + PROCS=$PROCS: beyond port 65535" >&2
  exit 2
fi

# shellcheck source=scripts/compare-common.sh
. "$ROOT/scripts/compare-common.sh"
build_compare

OUT=${OUT:-$CARGO_TARGET_DIR/scale-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs" || { echo "cannot create $OUT" >&2; exit 1; }
RESULTS="$OUT/results.tsv"
SAMPLES="$OUT/established.tsv"
: > "$RESULTS"
: > "$SAMPLES"

SERVER_PIDS=()
CLIENT_PIDS=()
cleanup() {
  local pid
  for pid in "${CLIENT_PIDS[@]}" "${SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${CLIENT_PIDS[@]}" "${SERVER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null
  done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

{
  machine_common
  echo "N=$N PROCS=$PROCS PORT=$PORT SETTLE=${SETTLE}s SIZE=$SIZE SOURCES=$SOURCES (per client)," \
    "servers on core $SERVER_CORE, clients on core $LOAD_CORE"
  echo "ulimit -n: $(ulimit -n) (hard $(ulimit -Hn)); ephemeral ports $PORT_LO-$PORT_HI;" \
    "somaxconn $(cat /proc/sys/net/core/somaxconn); tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)"
  echo "load at start: $(uptime | sed 's/.*load average/load average/')"
} | tee "$OUT/machine.txt" >&2

START=$SECONDS

# Servers: one per port, each must say `ready` within 10 s.
ports=()
for i in $(seq 0 $((PROCS - 1))); do
  port=$((PORT + i))
  ports+=("$port")
  taskset -c "$SERVER_CORE" "$BIN/servers" webchan "$port" > "$OUT/logs/server$i.log" 2>&1 &
  SERVER_PIDS+=("$!")
done
for i in $(seq 0 $((PROCS - 1))); do
  waited=0
  until grep -q '^ready' "$OUT/logs/server$i.log" 2>/dev/null; do
    if ! kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null || [ $waited -ge 100 ]; then
      echo "server $i (port ${ports[$i]}) did not start: $(head -n 3 "$OUT/logs/server$i.log" | tr '\n' ' ')" >&2
      echo "FAIL"
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
done
echo "$PROCS servers ready on ports ${ports[0]}..${ports[$((PROCS - 1))]}" >&2

# Clients, all at once. Time allowed: both settles, the opening and the echo (generously).
CLIENT_TIMEOUT=$((2 * SETTLE + 120 + N / 100))
conns=()
for i in $(seq 0 $((PROCS - 1))); do
  c=$PER
  [ "$i" -eq $((PROCS - 1)) ] && c=$LAST
  conns+=("$c")
  timeout "$CLIENT_TIMEOUT" taskset -c "$LOAD_CORE" "$BIN/load" idle --port "${ports[$i]}" --conns "$c" \
    --size "$SIZE" --sources "$SOURCES" --source-base $((2 + i * SOURCES)) --settle "$SETTLE" \
    --pid "${SERVER_PIDS[$i]}" > "$OUT/logs/client$i.out" 2> "$OUT/logs/client$i.err" &
  CLIENT_PIDS+=("$!")
done
echo "$PROCS clients started: $N connections (${conns[*]}), client timeout ${CLIENT_TIMEOUT}s" >&2

# Once a second: the server side of the channels, ESTABLISHED with a server port as local port.
filter="( sport = :${ports[0]}"
for p in "${ports[@]:1}"; do filter+=" or sport = :$p"; done
filter+=" )"
max=0
max_at=0
at_n=0 # samples that counted all N, the first and the last of them
first_n=""
last_n=""
deadline=$((SECONDS + CLIENT_TIMEOUT + 10))
last_shown=-1
t0=${EPOCHREALTIME/[.,]/} # microseconds
tick=$t0
while :; do
  alive=0
  for pid in "${CLIENT_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive=$((alive + 1)); fi
  done
  [ "$alive" -gt 0 ] || break
  if [ $SECONDS -ge $deadline ]; then
    echo "the clients did not finish within $((CLIENT_TIMEOUT + 10)) s: killing them" >&2
    for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    break
  fi
  now=${EPOCHREALTIME/[.,]/}
  count=$(ss -Htn state established "$filter" 2>/dev/null | wc -l)
  ds=$(((now - t0) / 100000)) # tenths of a second since the clients started
  t="$((ds / 10)).$((ds % 10))"
  printf '%s\t%s\t%s\n' "$t" "$count" "$alive" >> "$SAMPLES"
  if [ "$count" -ge "$N" ]; then
    at_n=$((at_n + 1))
    first_n=${first_n:-$t}
    last_n=$t
  fi
  if [ "$count" -gt "$max" ]; then
    max=$count
    max_at=$t
  fi
  # Progress every 5 s.
  if [ $((ds / 50)) -ne "$last_shown" ]; then
    last_shown=$((ds / 50))
    echo "  t=${t}s established=$count (max $max) clients running=$alive" >&2
  fi
  # The next sample one second after this one began (at once when `ss` took longer).
  tick=$((tick + 1000000))
  now=${EPOCHREALTIME/[.,]/}
  if [ "$tick" -gt "$now" ]; then
    wait_us=$((tick - now))
    sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
  else
    tick=$now
  fi
done

failures=0
for i in $(seq 0 $((PROCS - 1))); do
  wait "${CLIENT_PIDS[$i]}"
  rc=$?
  if ! kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null; then
    echo "server $i exited during the run (see $OUT/logs/server$i.log)" >&2
    rc=99
  fi
  line=$(tail -n 1 "$OUT/logs/client$i.out" 2>/dev/null)
  [ -n "$line" ] || line="errors=1"
  printf '%s\t%s\t%s\t%s\n' "$i" "${ports[$i]}" "$rc" "$line" >> "$RESULTS"
  if [ "$rc" -ne 0 ] || [[ " $line " != *" errors=0 "* ]]; then
    failures=$((failures + 1))
    [ "$rc" -eq 124 ] && echo "client $i: timed out after ${CLIENT_TIMEOUT}s" >&2
    echo "client $i: FAILED (exit $rc): $(head -n 3 "$OUT/logs/client$i.err" | tr '\n' ' ')" >&2
  fi
done
CLIENT_PIDS=()
cleanup
SERVER_PIDS=()
DURATION=$((SECONDS - START))
echo "load at end: $(uptime | sed 's/.*load average/load average/')" | tee -a "$OUT/machine.txt" >&2

echo
cat "$OUT/machine.txt"
echo
# The table: one row per server process from its client's key=value line, then the totals.
awk -F'\t' -v n="$N" '
  function get(line, key,   m) {
    if (match(" " line " ", " " key "=[^ ]*")) {
      m = substr(" " line " ", RSTART + length(key) + 2, RLENGTH - length(key) - 2)
      return m
    }
    return "NA"
  }
  BEGIN {
    printf "| process | port | conns | open s | idle KiB/conn | KiB/conn after echo | errors | exit |\n"
    printf "|---|---|---|---|---|---|---|---|\n"
    ok = 1
  }
  {
    conns = get($4, "conns"); b = get($4, "rss_before_kib"); i1 = get($4, "rss_idle_kib"); a = get($4, "rss_after_kib")
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, conns, get($4, "open_secs"), \
      get($4, "idle_kib_per_conn"), get($4, "after_kib_per_conn"), get($4, "errors"), $3
    if (conns == "NA" || b == "NA" || i1 == "NA" || a == "NA") { ok = 0; next }
    total += conns; idle += i1 - b; after += a - b
  }
  END {
    if (ok && total > 0)
      printf "| all | | %d | | %.2f | %.2f | | |\n", total, idle / n, after / n
    else
      printf "| all | | %s | | NA | NA | | |\n", (total > 0 ? total : "NA")
  }' "$RESULTS" | tee "$OUT/table.md"
echo
echo "max concurrent established (server side, ports ${ports[0]}..${ports[$((PROCS - 1))]}): $max at t=${max_at}s, of N=$N"
[ -n "$first_n" ] && echo "all N established: $at_n samples (once a second) from t=${first_n}s to t=${last_n}s"
echo "duration: ${DURATION}s"
echo "results: $OUT"
if [ "$failures" -eq 0 ] && [ "$max" -ge "$N" ]; then
  echo "PASS"
  exit 0
fi
[ "$max" -ge "$N" ] || echo "only $max of the $N connections were ever established at the same time" >&2
[ "$failures" -eq 0 ] || echo "$failures client(s) failed" >&2
echo "FAIL"
exit 1
