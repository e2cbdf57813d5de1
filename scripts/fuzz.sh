#!/usr/bin/env bash
# Fuzzing. With cargo-fuzz and a nightly (or RUSTC_BOOTSTRAP=1) toolchain, runs every target in
# fuzz/ for SECONDS each (default 600) on the committed corpora. Without it, runs the stable
# stand-in tests/hardening_fuzz.rs with ITERS iterations (default 200000) and a random seed.
# Usage: scripts/fuzz.sh [SECONDS] [ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-600}"
ITERS="${2:-200000}"
if cargo fuzz --version >/dev/null 2>&1; then
  for t in brp_body bsn_kenteken purpose config audit_segment; do
    corpus="fuzz/corpus/${t}"
    [ "$t" = bsn_kenteken ] && corpus="fuzz/corpus/bsn fuzz/corpus/kenteken"
    # shellcheck disable=SC2086
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" $corpus -- -max_total_time="$SECS"
  done
else
  echo "cargo-fuzz not installed: running the stable stand-in (${ITERS} iterations)"
  HARDENING_FUZZ_ITERS="$ITERS" HARDENING_FUZZ_SEED="${SEED:-$RANDOM}" \
    cargo test --test hardening_fuzz -- --nocapture
fi
