# shellcheck shell=bash
# What scripts/bench.sh and scripts/scale.sh share: sourced by both, with ROOT set to the
# repository's top.

# Builds benches/compare in release mode (its own cargo project) and sets BIN to where its
# binaries are; exits 1 when the build fails.
build_compare() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/benches/compare/target}"
  echo "building benches/compare (release)..." >&2
  if ! cargo build --release --manifest-path "$ROOT/benches/compare/Cargo.toml" >&2; then
    echo "build failed" >&2
    exit 1
  fi
  BIN="$CARGO_TARGET_DIR/release"
}

# The lines every result directory starts with: when, which webchan, what machine.
machine_common() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "webchan: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)')$( [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ] && echo ' (src/ with uncommitted changes)')"
  echo "cpu: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
}
