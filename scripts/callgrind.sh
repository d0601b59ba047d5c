#!/usr/bin/env bash
# Instructions per echoed message, counted by callgrind (repeatable whatever else the machine
# is doing, unlike wall-clock figures): builds benches/instructions.rs in release mode, runs it
# under `valgrind --tool=callgrind`, prints instructions per message, and leaves the profile
# (callgrind.out) for `callgrind_annotate` in OUT.
#
#   scripts/callgrind.sh            # OUT defaults to target/callgrind
#   CONNS=1 INFLIGHT=1 ROUNDS=50000 scripts/callgrind.sh   # ping-pong: one message per wake-up
# (the workload's shape, see benches/instructions.rs; the defaults are 64, 8 and 500)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/callgrind}
mkdir -p "$OUT"
cargo bench --bench instructions --no-run >&2
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/instructions-* | grep -v '\.d$' | head -n 1)
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BIN" > "$OUT/stdout" 2> "$OUT/stderr"
messages=$(sed -n 's/^messages=//p' "$OUT/stdout")
total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$OUT/stderr")
echo "instructions=$total messages=$messages per_message=$((total / messages))"
echo "profile: $OUT/callgrind.out (callgrind_annotate $OUT/callgrind.out | head -40)" >&2
