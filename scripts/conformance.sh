#!/usr/bin/env bash
# Schema-driven conformance of the gate against the Haal Centraal BRP Personen spec: schemathesis
# (property-based, from PyPI) generates requests from the spec's `POST /personen` (valid and
# invalid bodies), sends them to the gate at /haalcentraal/api/brp/personen in front of the example
# registry, and checks every answer: no 5xx, a status the spec lists for the operation, the
# spec's content type and the spec's schema for that status (Foutbericht, BadRequestFoutbericht
# with its patterns, PersonenQueryResponse).
#
# All of schemathesis's checks but one: `positive_data_acceptance` expects a 2xx for any body the
# JSON Schema allows, but `PersonenQuery` selects its query type by a `discriminator` (which JSON
# Schema does not enforce) and the spec itself answers 400 to schema-valid bodies with an unknown
# `type` or a `fields` path that names no field ("Opgave van een pad dat verwijst naar een
# niet-bestaand veld ... leidt tot een 400 Bad Request"). Those 400s are still checked against
# BadRequestFoutbericht.
#
# Two runs, each with a minted token and the X-Case-Id of an open case naming every person of the
# example data:
#   1. `spec`: the spec as published, as emp-042 (vergunningverlener) on a parkeervergunning case
#      (searches are refused by policy);
#   2. `queries`: the spec with its `discriminator` spelled out and `fields` narrowed to what the
#      case type allows (scripts/conformance_spec.py), as emp-311 (burgerzaken) on a burgerzaken
#      case, which may search: generated lookups and searches reach Cedar and the registry, and the
#      registry's answers (200s, its own 400s) pass through the gate.
#
# Builds the gate and the examples, starts the example registry and a gate on free loopback ports
# with a fresh audit directory, runs schemathesis, and stops everything it started.
#
# Usage: scripts/conformance.sh
# Environment:
#   CONFORMANCE_EXAMPLES=100   examples per run (hypothesis max-examples); CI uses the default,
#                              a long run by hand e.g. CONFORMANCE_EXAMPLES=5000
#   CONFORMANCE_SEED=          schemathesis seed (default: random, printed by schemathesis)
#   CONFORMANCE_REPORTS=target/conformance/reports   JUnit reports (spec.xml, queries.xml)
#   CONFORMANCE_VENV=target/conformance/venv   where schemathesis is installed
#   BRP_PERSONEN_SPEC=../shared/reference/brp-personen-openapi.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${CONFORMANCE_EXAMPLES:-100}"
SPEC="${BRP_PERSONEN_SPEC:-../shared/reference/brp-personen-openapi.yaml}"
VENV="${CONFORMANCE_VENV:-target/conformance/venv}"
SCHEMATHESIS_VERSION=4.32.5

if [ ! -f "$SPEC" ]; then
  echo "conformance: skipped: the BRP Personen spec is not at $SPEC (set BRP_PERSONEN_SPEC)"
  exit 0
fi

# --- schemathesis in a virtual environment (installs python3 with apt where it is missing)
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
fi

cargo build --quiet --bin purpose-gate --example example_registry --example mint_token
BIN=target/debug

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local port="$1" name="$2" i
  for i in $(seq 1 200); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "conformance: $name did not listen on 127.0.0.1:$port" >&2
  cat "$WORK"/*.log >&2 || true
  exit 1
}

REGISTRY_PORT="$(free_port)"
GATE_PORT="$(free_port)"

# --- cases open now (windows relative to today), with every person of the example data
python3 - "$WORK/cases.json" <<'EOF'
import datetime, json, sys
now = datetime.datetime.now(datetime.timezone.utc)
t = lambda days: (now + datetime.timedelta(days=days)).isoformat()
persons = [p["burgerservicenummer"] for p in json.load(open("examples/data/personen.json"))["personen"]]
case = lambda cid, ctype, handler: {
    "id": cid, "type": ctype, "status": "open", "opened": t(-10), "closes": t(30),
    "organization": "0363", "handlers": [handler], "subjects": persons, "vehicles": []}
json.dump({"cases": [case("Z-CONF-PARKEREN", "parkeervergunning", "emp-042"),
                     case("Z-CONF-BURGERZAKEN", "burgerzaken", "emp-311")]},
          open(sys.argv[1], "w"), indent=1)
EOF

cat > "$WORK/gate.toml" <<EOF
gate_id = "conformance-gate"
[server]
listen = "127.0.0.1:${GATE_PORT}"
[auth]
issuer = "https://idp.demo.purpose-gate.example"
audience = "purpose-gate"
jwks_file = "$PWD/examples/demo/keys/jwks.json"
[policies]
dir = "$PWD/policies"
[cases]
file = "cases.json"
[audit]
dir = "audit"
[upstreams.brp]
url = "http://127.0.0.1:${REGISTRY_PORT}"
headers = { "x-api-key" = "conformance-brp-key" }
[upstreams.rdw]
url = "http://127.0.0.1:${REGISTRY_PORT}"
EOF

"$BIN/examples/example_registry" --listen "127.0.0.1:${REGISTRY_PORT}" --data examples/data \
  >"$WORK/registry.log" 2>&1 &
PIDS+=("$!")
"$BIN/purpose-gate" serve --config "$WORK/gate.toml" >"$WORK/gate.log" 2>&1 &
PIDS+=("$!")
wait_for_port "$REGISTRY_PORT" "the example registry"
wait_for_port "$GATE_PORT" "the gate"

SEED_ARGS=()
if [ -n "${CONFORMANCE_SEED:-}" ]; then SEED_ARGS=(--seed "$CONFORMANCE_SEED"); fi
REPORTS="${CONFORMANCE_REPORTS:-target/conformance/reports}"
mkdir -p "$REPORTS"

"$VENV/bin/python" scripts/conformance_spec.py "$SPEC" policies/entities.json burgerzaken \
  "$WORK/queries-openapi.json"

run() {
  local label="$1" spec="$2" mode="$3" sub="$4" roles="$5" case_id="$6" token
  token="$("$BIN/examples/mint_token" --sub "$sub" --org 0363 --roles "$roles" --ttl 3600)"
  echo "=== conformance run: $label ($mode data, $sub, $roles, case $case_id, $EXAMPLES examples)"
  "$VENV/bin/schemathesis" run "$spec" \
    --url "http://127.0.0.1:${GATE_PORT}/haalcentraal/api/brp" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --mode "$mode" \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --request-timeout 10 \
    --suppress-health-check all \
    --report junit --report-junit-path "$REPORTS/$label.xml" \
    -H "Authorization: Bearer ${token}" \
    -H "X-Case-Id: ${case_id}" \
    "${SEED_ARGS[@]}"
}

status=0
run spec "$SPEC" all emp-042 vergunningverlener Z-CONF-PARKEREN || status=1
run queries "$WORK/queries-openapi.json" positive emp-311 burgerzaken Z-CONF-BURGERZAKEN || status=1

# What the runs exercised, from the gate's own audit log: decisions and forwarded answers.
python3 - "$WORK/audit" <<'PY'
import collections, glob, json, sys
decisions, outcomes = collections.Counter(), collections.Counter()
for path in sorted(glob.glob(sys.argv[1] + "/*.jsonl")):
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        if r.get("kind") == "decision":
            decisions[(r.get("action") or "-", r.get("decision"), r.get("code") or "")] += 1
        elif r.get("kind") == "outcome":
            outcomes[r.get("status")] += 1
print("audit: decision records by action, decision and code:")
for (action, decision, code), n in sorted(decisions.items()):
    print(f"  {n:6d}  {action} {decision} {code}")
print("audit: registry answers forwarded, by status:", dict(sorted(outcomes.items())))
PY

if grep -q '"level":"ERROR"\|panicked' "$WORK/gate.log"; then
  echo "conformance: the gate logged errors:" >&2
  grep '"level":"ERROR"\|panicked' "$WORK/gate.log" >&2 || true
  status=1
fi
exit "$status"
