#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzing client (../shared/tools/autobahn)
# against webchan's echo servers, and fails if any case FAILED.
#
#   scripts/autobahn.sh            # all cases, both servers
#
# Servers: examples/autobahn.rs (the Stream/Sink API) and examples/autobahn_compat.rs (the
# callback API of webchan::compat), both with permessage-deflate on. Takes about 6 minutes per
# server on 2 cores (chapters 12 and 13, compression, ~4.5 of them), plus the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${AUTOBAHN_TOOLS:-../shared/tools/autobahn}"
"$TOOLS/setup.sh" >/dev/null
status=0
run() { # run EXAMPLE PORT
  local example=$1 port=$2
  cargo build --release --example "$example" >/dev/null 2>&1
  # permessage-deflate on: chapters 12 and 13 run too (they report UNIMPLEMENTED without it).
  DEFLATE=1 PORT=$port "./target/release/examples/$example" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "== $example"
  AUTOBAHN_AGENT="webchan-$example" "$TOOLS/run.sh" "ws://127.0.0.1:$port" || status=1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
run autobahn 9101
if [ -f examples/autobahn_compat.rs ]; then
  run autobahn_compat 9102
fi
exit $status
