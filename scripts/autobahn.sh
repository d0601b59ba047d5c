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
# shellcheck source=scripts/example-common.sh
source scripts/example-common.sh
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { # run EXAMPLE
  local example=$1
  cargo build --release --example "$example" >/dev/null 2>&1
  echo "== $example"
  # permessage-deflate on: chapters 12 and 13 run too (they report UNIMPLEMENTED without it).
  if ! start_example "$example" "$log" DEFLATE=1; then
    echo "autobahn: $example did not start:" >&2
    cat "$log" >&2
    kill "$EXAMPLE_PID" 2>/dev/null || true
    status=1
    return
  fi
  AUTOBAHN_AGENT="webchan-$example" "$TOOLS/run.sh" "ws://127.0.0.1:$EXAMPLE_PORT" || status=1
  kill "$EXAMPLE_PID" 2>/dev/null || true
  wait "$EXAMPLE_PID" 2>/dev/null || true
}
run autobahn
if [ -f examples/autobahn_compat.rs ]; then
  run autobahn_compat
fi
exit $status
