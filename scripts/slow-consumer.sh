#!/usr/bin/env bash
# Slow consumers: builds examples/slow_consumer in release mode and runs it: CLIENTS clients
# (half WebSocket, half HTTP stream) that read READ_BYTES_PER_S bytes a second while the server
# sends to each as fast as the channel's Sink allows. Prints the server's RSS (VmRSS) over
# time and checks that the growth per channel stays under the queue limit plus the transport's
# buffers. Exits non-zero if a check fails.
#
#   scripts/slow-consumer.sh [SECONDS=30] [CLIENTS=8] [QUEUE_KIB=1024] [READ_BYTES_PER_S=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example slow_consumer >/dev/null 2>&1 || cargo build --release --example slow_consumer
exec ./target/release/examples/slow_consumer "${1:-30}" "${2:-8}" "${3:-1024}" "${4:-1024}"
