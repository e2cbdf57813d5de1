# Sourced by bench/proxy.sh and bench/cost.sh: writes the gate's files for a load test into $1.
#
#   gate_files DIR REPO UP_PORT GATE_PORT
#
# DIR/policies: the shipped policies, with the one change a load test needs: the volume limit
# (`lookups_last_hour <= 200`, `> 200`) is raised, or every request after the 200th would be a
# deny. The policies evaluated are otherwise byte for byte the shipped ones.
# DIR/cases.json: 10,000 open cases, windows around now; Z-BENCH-000001 is the one used.
# DIR/gate.toml: ES256 JWT against the demo JWKS, those policies and cases, durable audit in
# DIR/audit, both upstreams on 127.0.0.1:UP_PORT, listening on 127.0.0.1:GATE_PORT.
gate_files() {
    local dir=$1 repo=$2 up_port=$3 gate_port=$4
    mkdir -p "$dir/policies" "$dir/audit"
    cp -r "$repo/policies/." "$dir/policies/"
    sed -i 's/lookups_last_hour <= 200/lookups_last_hour <= 1000000000/; s/lookups_last_hour > 200/lookups_last_hour > 1000000000/' \
        "$dir/policies/gate.cedar"

    local opened closes
    opened=$(date -u -d '-10 days' +%Y-%m-%dT%H:%M:%SZ)
    closes=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
    awk -v opened="$opened" -v closes="$closes" 'BEGIN {
        printf "{\"cases\": [\n"
        for (i = 1; i <= 10000; i++) {
            printf "{\"id\": \"Z-BENCH-%06d\", \"type\": \"parkeervergunning\", \"status\": \"open\", ", i
            printf "\"opened\": \"%s\", \"closes\": \"%s\", \"organization\": \"0363\", ", opened, closes
            printf "\"handlers\": [\"emp-042\", \"emp-%d\"], \"subjects\": [\"999993653\"], \"vehicles\": [\"XX999X\"]}%s\n", \
                1000 + i, (i < 10000 ? "," : "")
        }
        printf "]}\n"
    }' >"$dir/cases.json"

    cat >"$dir/gate.toml" <<EOF
gate_id = "bench-gate"

[server]
listen = "127.0.0.1:$gate_port"

[auth]
issuer = "https://idp.demo.purpose-gate.example"
audience = "purpose-gate"
jwks_file = "$repo/examples/demo/keys/jwks.json"

[policies]
dir = "policies"

[cases]
file = "cases.json"

[audit]
dir = "audit"

[upstreams.brp]
url = "http://127.0.0.1:$up_port"
headers = { "x-api-key" = "demo-brp-key" }

[upstreams.rdw]
url = "http://127.0.0.1:$up_port"
headers = { "x-api-key" = "demo-rdw-key" }
EOF
}

# store_gate_files DIR REPO UP_PORT GATE_PORT BIN STORE_URL DB GATE_ID: gate_files, and `[store]`
# shipping under gate id GATE_ID into a fresh database DB on the server of STORE_URL (dropped,
# created and migrated with BIN's purpose-gate; the migration's output in DIR.migrate.log). Sets
# STORE_DB_URL to the database's URL; returns 1 (having said why) when any step fails.
store_gate_files() {
    local dir=$1 repo=$2 up_port=$3 gate_port=$4 bin=$5 url=$6 db=$7 gate_id=$8
    psql -q -v ON_ERROR_STOP=1 "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" \
        || { printf 'cannot create database %s through %s\n' "$db" "$url" >&2; return 1; }
    STORE_DB_URL="${url%/*}/$db"
    "$bin/purpose-gate" store migrate --db "$STORE_DB_URL" >"$dir.migrate.log" 2>&1 \
        || { printf 'store migrate failed: see %s\n' "$dir.migrate.log" >&2; return 1; }
    gate_files "$dir" "$repo" "$up_port" "$gate_port"
    sed -i "s/^gate_id = .*/gate_id = \"$gate_id\"/" "$dir/gate.toml"
    printf '\n[store]\nurl = "%s"\n' "$STORE_DB_URL" >>"$dir/gate.toml"
}
