#!/usr/bin/env bash
# Interop with real WebSocket client libraries: Node's `ws` (tests/interop/client.mjs, pinned in
# tests/interop/package.json) and Python's `websockets` (tests/interop/client.py, pinned below,
# installed into target/interop-venv) against the echo servers of both APIs
# (examples/autobahn.rs, examples/autobahn_compat.rs). The clients check echoes of text and
# binary at the frame-length boundaries up to 1 MiB, UTF-8 across boundaries and fragments,
# messages in flight kept in order, ping/pong payloads, permessage-deflate offered and accepted
# (every echo of the run then compressed both ways) or declined, or accepted with the client
# told to reset its context (a third run of examples/autobahn.rs, DEFLATE=reset),
# subprotocols offered (one picked by the Stream API's server, which has a list; none by
# compat's), a close with 4000 echoed, a second connection,
# and 50 connections at once.
#
#   scripts/interop.sh
#
# Needs node + npm and python3 with venv (Debian: python3-venv); reaches npm and PyPI the first
# time only. Not part of `cargo test`, which must work without them; .ci/run runs it. Exits
# nonzero if any client failed against any server; one summary line per client/server pair.
set -euo pipefail
cd "$(dirname "$0")/.."

WEBSOCKETS_VERSION=17.4
VENV=target/interop-venv

# Node's ws.
if [[ ! -f tests/interop/node_modules/ws/package.json ]]; then
  (cd tests/interop && npm ci --no-audit --no-fund >/dev/null)
fi

# Python's websockets, in a venv of its own (only if not there already at this version).
if ! "$VENV/bin/python" -c "import websockets, sys; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" \
  2>/dev/null; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "interop: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION"
fi

cargo build --release --example autobahn --example autobahn_compat >/dev/null 2>&1 ||
  cargo build --release --example autobahn --example autobahn_compat

# shellcheck source=scripts/example-common.sh
source scripts/example-common.sh

logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$logs"
}
trap cleanup EXIT

status=0
summary=()
start=$SECONDS
for run in autobahn autobahn_compat autobahn:reset; do
  example=${run%%:*}
  # The Stream API's server with permessage-deflate on, compat's without: the clients offer it
  # by default, so one run covers both answers (EXPECT_DEFLATE tells them which). Then the
  # Stream API's server again with every client told to reset its compression context
  # (DEFLATE=reset, Config::deflate_client_context(false)), which neither client offers.
  # The same for subprotocols: the Stream API's server chooses from "superchat,chat", compat's
  # from none (EXPECT_PROTOCOL tells the clients what to expect for their offer "chat,
  # superchat").
  deflate=0
  protocols=
  expect_protocol=
  if [[ $run == autobahn ]]; then
    deflate=1
    protocols=superchat,chat
    expect_protocol=superchat
  elif [[ $run == autobahn:reset ]]; then
    deflate=reset
  fi
  up=1
  start_example "$example" "$logs/${run/:/-}.log" DEFLATE="$deflate" PROTOCOLS="$protocols" ||
    up=0
  pid=$EXAMPLE_PID
  port=$EXAMPLE_PORT
  pids+=("$pid")
  if [[ $up == 0 ]]; then
    echo "interop: $run did not start:" >&2
    cat "$logs/${run/:/-}.log" >&2
    summary+=("FAIL  ws + websockets vs $run: server did not start")
    status=1
    continue
  fi
  for client in ws websockets; do
    echo "== $client client vs $run (ws://127.0.0.1:$port/)"
    t0=$SECONDS
    if [[ $client == ws ]]; then
      cmd=(node tests/interop/client.mjs "ws://127.0.0.1:$port/")
    else
      cmd=("$VENV/bin/python" tests/interop/client.py "ws://127.0.0.1:$port/")
    fi
    # The clients have their own 60 s watchdog; this is a backstop.
    if EXPECT_DEFLATE=$deflate EXPECT_PROTOCOL=$expect_protocol timeout 120 "${cmd[@]}" |
      tee "$logs/out"; then
      result=ok
    else
      result=FAIL
      status=1
    fi
    counts=$(grep -E '^[a-z]+: [0-9]+ passed, [0-9]+ failed$' "$logs/out" | tail -1 | cut -d' ' -f2-)
    summary+=("$(printf '%-4s  %-10s vs %-15s %s (%d s)' "$result" "$client" "$run" \
      "${counts:-no result line}" $((SECONDS - t0)))")
  done
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "interop: $run exited during the run:" >&2
    cat "$logs/${run/:/-}.log" >&2
    summary+=("FAIL  $run exited during the run")
    status=1
  fi
done

echo
echo "== interop summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}"
exit $status
