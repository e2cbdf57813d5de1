#!/usr/bin/env bash
# Crash consistency, long run: SIGKILL the gate binary under load KILLS times (default 200) at
# random moments (SEED), restarting it on the same audit directory, then check that every request
# the registry saw has a durable decision record, seq is gap-free and `audit verify` passes.
# CI runs the same test with 20 kills (.ci/hardening). Usage: scripts/crash-test.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export HARDENING_CRASH_KILLS="${1:-200}"
export HARDENING_CRASH_SEED="${2:-$RANDOM}"
echo "crash test: ${HARDENING_CRASH_KILLS} kills, seed ${HARDENING_CRASH_SEED}"
exec cargo test --test hardening_crash -- --nocapture
