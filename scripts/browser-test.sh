#!/usr/bin/env bash
# Browser end-to-end test of the demo: builds it (debug, sharing the test build), then drives
# tabs of Debian's headless Chromium through the page (tests/browser/e2e.mjs): chat over
# WebSockets, the SSE clock (one tab streams for all: ten tabs load and show it, and Stop hands
# it over), EventSource reconnection with Last-Event-ID and a 204 that stops it (/events), the
# /events log bounded under a flood of long Last-Event-IDs, a download.
#
#   scripts/browser-test.sh                      # build target/debug/examples/demo and test it
#   DEMO_BIN=path/to/demo scripts/browser-test.sh   # test a binary built already
#
# Needs: node + npm, and chromium at /usr/bin/chromium (`apt-get install chromium`; .ci/run
# installs it). Never downloads a browser. Last line: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium_bin" ]]; then
  echo "browser-test: no Chromium at $chromium_bin (apt-get install chromium)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

if [[ -z "${DEMO_BIN:-}" ]]; then
  cargo build --example demo --example autobahn
  DEMO_BIN="target/debug/examples/demo"
fi
# The echo server for the check of Config::deflate_client_context(false) (run with
# DEFLATE=reset; `cargo build --examples` builds it where DEMO_BIN is given, as in .ci/run).
ECHO_BIN="${ECHO_BIN:-target/debug/examples/autobahn}"

if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

# The test has its own 5-minute watchdog; this is a backstop if node itself hangs.
DEMO_BIN="$DEMO_BIN" ECHO_BIN="$ECHO_BIN" CHROMIUM="$chromium_bin" timeout 600 node tests/browser/e2e.mjs
