#!/usr/bin/env bash
# Validates and tests the shipped policies with the official Cedar CLI (cedar-policy-cli 4.x),
# exactly as docs/policies.md describes. Run from anywhere; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cedar --version
cedar check-parse --policies policies/gate.cedar
cedar check-parse --schema policies/gate.cedarschema --entities policies/entities.json
cedar validate --schema policies/gate.cedarschema --policies policies/gate.cedar --deny-warnings
for t in policies/tests/*.json; do
  echo "cedar run-tests $t"
  cedar run-tests --schema policies/gate.cedarschema --policies policies/gate.cedar --tests "$t"
done
