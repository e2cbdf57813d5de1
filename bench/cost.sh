#!/usr/bin/env bash
# Per-request CPU cost, in instructions, of the gate and of nginx for the same requests to the
# same upstream: a noise-free figure on a shared machine (load does not change instruction
# counts, only time).
#
#   bench/cost.sh             # from the repository root; needs valgrind, nginx, python3
#
# The gate (release build, full production path as in bench/proxy.sh: ES256 JWT, Cedar with the
# shipped policies, 10,000 cases, durable audit) and then nginx (one worker, no master) run under
# `valgrind --tool=callgrind` with instrumentation off; after WARMUP requests it is switched on,
# COUNT requests are sent over CONNS keep-alive connections by bench/client.py, and switched off.
# Then the upstream itself (a second example registry under callgrind, sent the direct paths).
# Printed per route: instructions per request for gate, nginx and upstream, the ratio gate/nginx,
# and the gate's instructions per request by stage (bench/stages.py).
#
# Environment (defaults in brackets): COUNT [2000], CONNS [8], WARMUP [100], ROUTE [both:
# brp-lookup, rdw-holder], BASE_PORT [18180], KEEP=1 keeps the temp dir (callgrind files for
# callgrind_annotate / kcachegrind).
#
# STORE_URL=postgres://user@host:port/db measures a second gate, `gate+store`: the same gate with
# `[store]` shipping into a fresh database `pg_bench_cost` (dropped and created through
# STORE_URL). Its instructions per request include the shipper's (the lines handed over by the writer,
# their columns, the binary COPY, the store connection), which stages.py lists on their own.
# Under valgrind the gate runs some 50x slower, so the shipper's 100 ms linger gathers far fewer
# records per transaction than at full load: the per-transaction share is an upper bound.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=bench/gate-files.sh
. "$REPO/bench/gate-files.sh"

COUNT=${COUNT:-2000}
CONNS=${CONNS:-8}
WARMUP=${WARMUP:-100}
BASE_PORT=${BASE_PORT:-18180}
UP_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
GATE_PORT=$((BASE_PORT + 3))
DIRECT_PORT=$((BASE_PORT + 4))
STORE_GATE_PORT=$((BASE_PORT + 5))

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench/cost.sh: %s\n' "$*" >&2; exit 1; }

command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 is missing"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx is missing (apt-get install nginx)"

log "building the gate, the example registry and mint_token (release)"
cargo build --release --quiet --bin purpose-gate --example example_registry --example mint_token
BIN=$REPO/target/release

TMP=$(mktemp -d "$REPO/target/bench-cost.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port, pid, name
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "$3 exited at start: see $TMP/$3.log"
        sleep 0.2
    done
    die "$3 did not listen on port $1 within 120 s: see $TMP/$3.log"
}

# --- upstream (not measured) ----------------------------------------------------------------
"$BIN/examples/example_registry" --listen "127.0.0.1:$UP_PORT" --data "$REPO/examples/data" \
    >"$TMP/registry.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "${PIDS[-1]}" registry

# --- gate config: as bench/proxy.sh (bench/gate-files.sh) -----------------------------------
gate_files "$TMP" "$REPO" "$UP_PORT" "$GATE_PORT"

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
# bench/proxy.sh's nginx, as one process (no master) so that valgrind sees the worker.
master_process off;
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream registry {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location = /haalcentraal/api/brp/personen {
            proxy_set_header x-api-key demo-brp-key;
            proxy_pass http://registry/personen;
        }
        location /rdw/ {
            proxy_set_header x-api-key demo-rdw-key;
            proxy_pass http://registry/;
        }
    }
}
EOF

TOKEN=$("$BIN/examples/mint_token" --key "$REPO/examples/demo/keys/demo-signing-key.pem" \
    --sub emp-042 --org 0363 --roles vergunningverlener --ttl 7200)
BRP_BODY='{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam","verblijfplaats"]}'
# Route table: name | method | gate/nginx path | direct path (the upstream itself) | body
ROUTES=(
    "brp-lookup|POST|/haalcentraal/api/brp/personen|/personen|$BRP_BODY"
    "rdw-holder|GET|/rdw/voertuigen/XX999X/tenaamstelling|/voertuigen/XX999X/tenaamstelling|"
)
export BENCH_HEADERS="Authorization: Bearer $TOKEN
X-Case-Id: Z-BENCH-004711
X-Doelbinding: BRPACT-Vergunningen
Content-Type: application/json"

# Measures one server: $1 name, $2 port, then its command. Leaves $TMP/$1.<route>.cg. The
# server named `upstream` is sent the direct paths.
measure() {
    local name=$1 port=$2
    shift 2
    valgrind --tool=callgrind --instr-atstart=no --dump-instr=no --collect-jumps=no \
        --callgrind-out-file="$TMP/$name.cg" "$@" >"$TMP/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" "$name"
    for route in "${ROUTES[@]}"; do
        IFS='|' read -r rname BENCH_METHOD BENCH_PATH direct_path BENCH_BODY <<<"$route"
        [ "$name" = upstream ] && BENCH_PATH=$direct_path
        [ -n "${ROUTE:-}" ] && [ "$ROUTE" != "$rname" ] && continue
        export BENCH_METHOD BENCH_PATH BENCH_BODY
        python3 "$REPO/bench/client.py" "$port" "$WARMUP" "$CONNS" >/dev/null ||
            die "$rname via $name: warm-up answers were not all 200"
        callgrind_control --zero "$pid" >/dev/null
        callgrind_control --instr=on "$pid" >/dev/null
        python3 "$REPO/bench/client.py" "$port" "$COUNT" "$CONNS" >"$TMP/$name.$rname.client" ||
            die "$rname via $name: answers were not all 200: $(cat "$TMP/$name.$rname.client")"
        callgrind_control --instr=off "$pid" >/dev/null
        callgrind_control --dump="$rname" "$pid" >/dev/null
        # The dump is written asynchronously; wait for it.
        for _ in $(seq 1 100); do
            f=$(ls "$TMP/$name.cg".* 2>/dev/null | tail -1 || true)
            [ -n "$f" ] && grep -q '^totals:' "$f" 2>/dev/null && break
            sleep 0.2
        done
        mv "$f" "$TMP/$name.$rname.cg"
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$TMP/$name.cg" "$TMP/$name.cg".*
}

log "gate under callgrind (start-up takes a while: 10,000 cases, policies)"
measure gate "$GATE_PORT" "$BIN/purpose-gate" serve --config "$TMP/gate.toml"
if [ -n "${STORE_URL:-}" ]; then
    command -v psql >/dev/null || die "STORE_URL needs psql"
    store_gate_files "$TMP/store" "$REPO" "$UP_PORT" "$STORE_GATE_PORT" "$BIN" "$STORE_URL" pg_bench_cost \
        bench-cost-store || exit 1
    log "gate with [store] under callgrind"
    measure gate+store "$STORE_GATE_PORT" "$BIN/purpose-gate" serve --config "$TMP/store/gate.toml"
fi
log "nginx under callgrind"
measure nginx "$NGINX_PORT" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
log "the upstream (example registry) under callgrind, reached directly"
measure upstream "$DIRECT_PORT" "$BIN/examples/example_registry" --listen "127.0.0.1:$DIRECT_PORT" \
    --data "$REPO/examples/data"

total() { sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$1"; }
printf '\ninstructions per request (callgrind, %s requests over %s connections after %s warm-up)\n' \
    "$COUNT" "$CONNS" "$WARMUP"
for route in "${ROUTES[@]}"; do
    rname=${route%%|*}
    [ -f "$TMP/gate.$rname.cg" ] || continue
    g=$(total "$TMP/gate.$rname.cg")
    n=$(total "$TMP/nginx.$rname.cg")
    u=$(total "$TMP/upstream.$rname.cg")
    awk -v r="$rname" -v g="$g" -v n="$n" -v u="$u" -v c="$COUNT" \
        'BEGIN { printf "%-11s gate %9.0f  nginx %8.0f  gate/nginx %.1f  upstream %8.0f\n", r, g / c, n / c, g / n, u / c }'
    python3 "$REPO/bench/stages.py" "$TMP/gate.$rname.cg" "$COUNT"
    if [ -f "$TMP/gate+store.$rname.cg" ]; then
        gs=$(total "$TMP/gate+store.$rname.cg")
        awk -v r="$rname" -v g="$g" -v s="$gs" -v c="$COUNT" \
            'BEGIN { printf "%-11s gate+store %9.0f  gate+store/gate %.3f\n", r, s / c, s / g }'
        python3 "$REPO/bench/stages.py" "$TMP/gate+store.$rname.cg" "$COUNT"
    fi
done
