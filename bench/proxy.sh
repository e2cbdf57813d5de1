#!/usr/bin/env bash
# Proxy benchmark: the same upstream reached directly, through nginx (a plain reverse proxy) and
# through purpose-gate with the full production path (ES256 JWT, Cedar with the shipped policies,
# a case registry of 10,000 cases, durable hash-chained audit on disk), measured side by side.
#
#   bench/proxy.sh            # from the repository root; needs root for apt-get when wrk/nginx are missing
#
# Prints, per route (BRP POST lookup, RDW GET holder): requests/s, p50 and p99 for direct, nginx
# and gate (median of ROUNDS closed-loop runs of DURATION with CONNS connections, targets in
# alternation), the ratio gate/nginx, a fixed-rate run at the same rate for nginx and gate with
# latency measured from the scheduled send time, and the gate's peak resident memory (VmHWM).
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
#
# Environment (defaults in brackets): ROUNDS [3], DURATION [10s], CONNS [64], THREADS [nproc] (gate
# runtime workers = nginx worker_processes), WRK_THREADS [2], RATE [half the slower proxy's
# closed-loop median], PACED_CONNS [16], PACED_DURATION [DURATION], BASE_PORT [18080],
# KEEP=1 keeps the temp dir (audit log, configs, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=bench/gate-files.sh
. "$REPO/bench/gate-files.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PACED_CONNS=${PACED_CONNS:-16}
PACED_DURATION=${PACED_DURATION:-$DURATION}
BASE_PORT=${BASE_PORT:-18080}
UP_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
GATE_PORT=$((BASE_PORT + 3))

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench/proxy.sh: %s\n' "$*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------
have_nginx() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
if ! command -v wrk >/dev/null || ! have_nginx; then
    [ "$(id -u)" = 0 ] || die "wrk and nginx are missing: run as root, or install them (apt-get install wrk nginx)"
    log "installing wrk and nginx from the Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for port in "$UP_PORT" "$NGINX_PORT" "$GATE_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is in use: set BASE_PORT to another value"
    fi
done

log "building the gate, the example registry and mint_token (release)"
cargo build --release --quiet --bin purpose-gate --example example_registry --example mint_token
BIN=$REPO/target/release

# --- temp dir and cleanup -------------------------------------------------------------------
# The audit log must be on a real disk (fdatasync on tmpfs proves nothing): the temp dir lives
# under target/, next to the build.
TMP=$(mktemp -d "$REPO/target/bench-proxy.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fstype=$(stat -f -c %T "$TMP")
case $fstype in tmpfs | ramfs) log "warning: $TMP is on $fstype: fdatasync is not durable there" ;; esac

wait_port() { # port, pid, name
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "$3 exited at start: see $TMP/$3.log"
        sleep 0.1
    done
    die "$3 did not listen on port $1 within 10 s: see $TMP/$3.log"
}

# --- upstream -------------------------------------------------------------------------------
log "starting the example registry on 127.0.0.1:$UP_PORT"
TOKIO_WORKER_THREADS=$THREADS "$BIN/examples/example_registry" \
    --listen "127.0.0.1:$UP_PORT" --data "$REPO/examples/data" >"$TMP/registry.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT" "$UP_PID" registry

# --- gate -----------------------------------------------------------------------------------
# Policies (volume limit raised), 10,000 cases and gate.toml: bench/gate-files.sh.
gate_files "$TMP" "$REPO" "$UP_PORT" "$GATE_PORT"

log "starting the gate on 127.0.0.1:$GATE_PORT ($THREADS runtime workers)"
RUST_LOG=${RUST_LOG:-warn} TOKIO_WORKER_THREADS=$THREADS "$BIN/purpose-gate" serve --config "$TMP/gate.toml" \
    >"$TMP/gate.log" 2>&1 &
GATE_PID=$!
PIDS+=("$GATE_PID")
wait_port "$GATE_PORT" "$GATE_PID" gate

# --- nginx ----------------------------------------------------------------------------------
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
# A plain reverse proxy to the same upstream, the gate's routes, keepalive to the upstream.
worker_processes $THREADS;
daemon off;
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
log "starting nginx on 127.0.0.1:$NGINX_PORT ($THREADS workers)"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" "$NGINX_PID" nginx

# --- requests -------------------------------------------------------------------------------
TOKEN=$("$BIN/examples/mint_token" --key "$REPO/examples/demo/keys/demo-signing-key.pem" \
    --sub emp-042 --org 0363 --roles vergunningverlener --ttl 7200)
CASE=Z-BENCH-004711
BRP_BODY='{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam","verblijfplaats"]}'
# Route table: name | method | gate/nginx path | direct path | body
ROUTES=(
    "brp-lookup|POST|/haalcentraal/api/brp/personen|/personen|$BRP_BODY"
    "rdw-holder|GET|/rdw/voertuigen/XX999X/tenaamstelling|/voertuigen/XX999X/tenaamstelling|"
)
port_of() { case $1 in direct) echo "$UP_PORT" ;; nginx) echo "$NGINX_PORT" ;; gate) echo "$GATE_PORT" ;; esac; }

# Sets BENCH_* for route $1 against target $2.
request_env() {
    IFS='|' read -r _ BENCH_METHOD proxied_path direct_path BENCH_BODY <<<"$1"
    if [ "$2" = direct ]; then BENCH_PATH=$direct_path; else BENCH_PATH=$proxied_path; fi
    BENCH_HEADERS="Authorization: Bearer $TOKEN
X-Case-Id: $CASE
X-Doelbinding: BRPACT-Vergunningen
Content-Type: application/json"
    export BENCH_METHOD BENCH_PATH BENCH_BODY BENCH_HEADERS
}

# One request per target, so a misconfiguration fails here and not as a fast stream of errors.
for route in "${ROUTES[@]}"; do
    for target in direct nginx gate; do
        request_env "$route" "$target"
        args=(-s -o "$TMP/check.out" -w '%{http_code}' -X "$BENCH_METHOD")
        while IFS= read -r h; do args+=(-H "$h"); done <<<"$BENCH_HEADERS"
        [ -n "$BENCH_BODY" ] && args+=(--data "$BENCH_BODY")
        code=$(curl "${args[@]}" "http://127.0.0.1:$(port_of "$target")$BENCH_PATH" || true)
        [ "$code" = 200 ] || die "${route%%|*} via $target answered $code: $(head -c 300 "$TMP/check.out")"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p"; }

printf '\nmachine: %s cores, %s, kernel %s; load average at start: %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'closed loop: %s rounds x %s, %s connections, wrk -t%s; gate and nginx with %s workers\n' \
    "$ROUNDS" "$DURATION" "$CONNS" "$WRK_THREADS" "$THREADS"

declare -A RPS P50 P99
: >"$TMP/results.txt"
for route in "${ROUTES[@]}"; do
    name=${route%%|*}
    for round in $(seq 1 "$ROUNDS"); do
        for target in direct nginx gate; do
            request_env "$route" "$target"
            out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$REPO/bench/closed.lua" \
                "http://127.0.0.1:$(port_of "$target")" | grep '^RESULT')
            log "$name $target round $round: $out"
            echo "$name $target $out" >>"$TMP/results.txt"
            non2xx=$(field non2xx <<<"$out")
            errors=$(field errors <<<"$out")
            [ "$non2xx" = 0 ] && [ "$errors" = 0 ] || log "warning: $name via $target: $non2xx non-2xx answers, $errors socket errors"
        done
    done
    for target in direct nginx gate; do
        RPS[$name.$target]=$(grep "^$name $target " "$TMP/results.txt" | field rps | median)
        P50[$name.$target]=$(grep "^$name $target " "$TMP/results.txt" | field p50_us | median)
        P99[$name.$target]=$(grep "^$name $target " "$TMP/results.txt" | field p99_us | median)
    done
done

printf '\n%-11s %-7s %10s %9s %9s\n' route target "req/s" "p50 ms" "p99 ms"
for route in "${ROUTES[@]}"; do
    name=${route%%|*}
    for target in direct nginx gate; do
        awk -v n="$name" -v t="$target" -v r="${RPS[$name.$target]}" -v a="${P50[$name.$target]}" -v b="${P99[$name.$target]}" \
            'BEGIN { printf "%-11s %-7s %10.0f %9.2f %9.2f\n", n, t, r, a / 1000, b / 1000 }'
    done
    awk -v n="$name" -v g="${RPS[$name.gate]}" -v x="${RPS[$name.nginx]}" \
        'BEGIN { printf "%-11s gate/nginx requests/s: %.2f (bar: >= 0.80)\n", n, g / x }'
done

# --- fixed rate -----------------------------------------------------------------------------
printf '\nfixed rate (%s connections, %s; latency from the scheduled send time)\n' "$PACED_CONNS" "$PACED_DURATION"
printf '%-11s %-7s %7s %9s %8s %8s %8s %8s %7s\n' route target rate achieved "p50 ms" "p99 ms" "p99.9 ms" "max ms" non2xx
for route in "${ROUTES[@]}"; do
    name=${route%%|*}
    if [ -n "${RATE:-}" ]; then
        rate=$RATE
    else
        rate=$(awk -v g="${RPS[$name.gate]}" -v x="${RPS[$name.nginx]}" 'BEGIN { m = (g < x ? g : x); printf "%d", m / 2 }')
    fi
    for target in nginx gate; do
        request_env "$route" "$target"
        out=$(BENCH_RATE=$rate BENCH_CONNS=$PACED_CONNS wrk -t"$PACED_CONNS" -c"$PACED_CONNS" -d"$PACED_DURATION" \
            -s "$REPO/bench/paced.lua" "http://127.0.0.1:$(port_of "$target")" | grep '^PACED')
        echo "$name $target $out" >>"$TMP/results.txt"
        awk -v n="$name" -v t="$target" -v r="$rate" -v a="$(field achieved <<<"$out")" -v p50="$(field p50_us <<<"$out")" \
            -v p99="$(field p99_us <<<"$out")" -v p999="$(field p999_us <<<"$out")" -v mx="$(field max_us <<<"$out")" \
            -v bad="$(field non2xx <<<"$out")" \
            'BEGIN { printf "%-11s %-7s %7d %9.0f %8.2f %8.2f %8.2f %8.2f %7d\n", n, t, r, a, p50 / 1000, p99 / 1000, p999 / 1000, mx / 1000, bad }'
    done
done

# --- memory and audit -----------------------------------------------------------------------
hwm=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$GATE_PID/status")
rss=$(sed -n 's/^VmRSS:[[:space:]]*//p' "/proc/$GATE_PID/status")
nginx_rss=0
for pid in $(pgrep -P "$NGINX_PID") "$NGINX_PID"; do
    kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null || echo 0)
    nginx_rss=$((nginx_rss + ${kb:-0}))
done
records=$(cat "$TMP"/audit/* 2>/dev/null | wc -l)
printf '\ngate peak resident memory (VmHWM): %s (now %s; bar: <= 64 MiB); nginx master+workers peak: %s kB\n' \
    "$hwm" "$rss" "$nginx_rss"
printf 'audit records written by the gate: %s, in %s\n' "$records" "$TMP/audit"
if "$BIN/purpose-gate" audit verify --dir "$TMP/audit" >"$TMP/verify.log" 2>&1; then
    printf 'audit verify: ok\n'
else
    printf 'audit verify: FAILED (see %s/verify.log)\n' "$TMP"
fi
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
