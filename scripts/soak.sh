#!/usr/bin/env bash
# Soak: builds examples/soak in release mode and runs it: a webchan server and its clients in
# one process on 127.0.0.1, CONNECTIONS connections (WebSocket and HTTP/1.1 + HTTP/2 streams,
# with random early disconnects) opened and closed in waves over about SECONDS; then checks
# that live channels and tasks are back to zero, file descriptors back to the start, and RSS
# within a few MiB of the start. Exits non-zero if a check fails.
#
#   scripts/soak.sh [SECONDS=60] [CONNECTIONS=10000] [WAVE=500] [SEED]
#
# MALLOC_ARENA_MAX (glibc) is left as the caller sets it: with the default (8 x cores arenas)
# freed memory stays in per-thread arenas and RSS ends a few MiB higher than with
# MALLOC_ARENA_MAX=1 (see RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --example soak >/dev/null 2>&1 || cargo build --release --example soak
exec ./target/release/examples/soak "${1:-60}" "${2:-10000}" "${3:-500}" ${4:+"$4"}
