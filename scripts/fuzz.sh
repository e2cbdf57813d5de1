#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc
# take the nightly-only flags cargo-fuzz passes. Installs cargo-fuzz when it is missing, then runs
# each target in fuzz/ for FUZZ_SECONDS (default 600) on its committed corpus in fuzz/corpus/<target>,
# one target at a time, at low CPU priority. A crash stops the script (exit code of cargo fuzz) and
# leaves the input in fuzz/artifacts/<target>/. See fuzz/README.md.
#
# Usage: scripts/fuzz.sh [TARGET...]        (default: every target)
# Environment:
#   FUZZ_SECONDS=600    seconds per target
#   FUZZ_SANITIZER=     address (the default of cargo fuzz) or none
#   FUZZ_CMIN=1         minimise each corpus after its run (cargo fuzz cmin)
#   FUZZ_NICE=19        nice level of the runs
#   TMPDIR              where audit_segment writes its scratch directory (default /dev/shm)
#   FUZZ_STABLE_ONLY=1  skip cargo-fuzz and run the stable stand-in tests/hardening_fuzz.rs
#                       (HARDENING_FUZZ_ITERS, default 200000; SEED)
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FUZZ_SECONDS:-600}"
NICE="${FUZZ_NICE:-19}"
SANITIZER="${FUZZ_SANITIZER:-address}"
ALL_TARGETS=(audit_segment brp_body bsn_kenteken config purpose)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

stand_in() {
  local iters="${HARDENING_FUZZ_ITERS:-200000}"
  echo "running the stable stand-in tests/hardening_fuzz.rs (${iters} iterations)"
  HARDENING_FUZZ_ITERS="$iters" HARDENING_FUZZ_SEED="${SEED:-$RANDOM}" \
    nice -n "$NICE" cargo test --test hardening_fuzz -- --nocapture
}

if [ -n "${FUZZ_STABLE_ONLY:-}" ]; then
  stand_in
  exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not installed: installing it"
  if ! cargo install cargo-fuzz --locked; then
    echo "cannot install cargo-fuzz: falling back to the stand-in" >&2
    stand_in
    exit 0
  fi
fi

export RUSTC_BOOTSTRAP=1
# audit_segment writes, fsyncs and recovers a segment per input: on tmpfs that is not disk-bound.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/${t}"
  mkdir -p "$corpus"
  echo "=== ${t}: ${SECS}s, sanitizer ${SANITIZER}, corpus ${corpus} ($(ls "$corpus" | wc -l) files)"
  nice -n "$NICE" cargo fuzz run -s "$SANITIZER" "$t" "$corpus" -- \
    -max_total_time="$SECS" -print_final_stats=1
  if [ -n "${FUZZ_CMIN:-}" ]; then
    nice -n "$NICE" cargo fuzz cmin -s "$SANITIZER" "$t" "$corpus"
    echo "=== ${t}: corpus minimised to $(ls "$corpus" | wc -l) files"
  fi
done
