#!/usr/bin/env bash
# Proxy benchmark: purpose-gate with the full production path (ES256 JWT, Cedar with the shipped
# policies, a case registry of 10,000 cases, durable hash-chained audit on disk) side by side with
# nginx as a plain reverse proxy, in front of two upstreams, in one run:
#   - `instant`: an nginx that answers every request at once with a fixed body (the example
#     registry's own answer, byte for byte, fetched at start), so the figures show the proxies'
#     own cost and not the upstream's;
#   - `registry`: the example registry (examples/example_registry.rs), itself the bottleneck.
#
#   bench/proxy.sh            # from the repository root; needs root for apt-get when wrk/nginx are missing
#
# Prints, per upstream and route (BRP POST lookup, RDW GET holder): requests/s, p50 and p99 for
# direct, nginx and gate (median of ROUNDS closed-loop runs of DURATION with CONNS connections,
# targets in alternation), the ratio gate/nginx, a fixed-rate run at the same rate for nginx and
# gate with latency measured from the scheduled send time, and each gate's peak resident memory
# (VmHWM). Everything listens on 127.0.0.1; every process started here is stopped on exit.
#
# Environment (defaults in brackets): UPSTREAMS ["instant registry"], ROUNDS [3], DURATION [10s],
# CONNS [64], THREADS [nproc] (gate runtime workers = nginx worker_processes), WRK_THREADS [2],
# RATE [half the slower proxy's closed-loop median, per upstream and route], PACED_CONNS [16],
# PACED_DURATION [DURATION], BASE_PORT [18080], KEEP=1 keeps the temp dir (audit logs, configs, logs).
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
UPSTREAMS=${UPSTREAMS:-instant registry}
# registry: upstream +1, nginx +2, gate +3; instant: upstream +4, nginx +5, gate +6.
declare -A UP_PORT=([registry]=$((BASE_PORT + 1)) [instant]=$((BASE_PORT + 4)))
declare -A NGINX_PORT=([registry]=$((BASE_PORT + 2)) [instant]=$((BASE_PORT + 5)))
declare -A GATE_PORT=([registry]=$((BASE_PORT + 3)) [instant]=$((BASE_PORT + 6)))
for up in $UPSTREAMS; do
    case $up in registry | instant) ;; *) printf 'bench/proxy.sh: unknown upstream %s (instant, registry)\n' "$up" >&2; exit 2 ;; esac
done

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

for port in "${UP_PORT[@]}" "${NGINX_PORT[@]}" "${GATE_PORT[@]}"; do
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

# --- the example registry (the `registry` upstream, and the source of the `instant` bodies) ---
log "starting the example registry on 127.0.0.1:${UP_PORT[registry]}"
TOKIO_WORKER_THREADS=$THREADS "$BIN/examples/example_registry" \
    --listen "127.0.0.1:${UP_PORT[registry]}" --data "$REPO/examples/data" >"$TMP/registry.log" 2>&1 &
PIDS+=("$!")
wait_port "${UP_PORT[registry]}" "${PIDS[-1]}" registry

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
# port_of UPSTREAM TARGET
port_of() { case $2 in direct) echo "${UP_PORT[$1]}" ;; nginx) echo "${NGINX_PORT[$1]}" ;; gate) echo "${GATE_PORT[$1]}" ;; esac; }

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

# curl_route UPSTREAM ROUTE TARGET OUTFILE [extra curl args]: prints the status code.
curl_route() {
    local up=$1 route=$2 target=$3 out=$4
    shift 4
    request_env "$route" "$target"
    local args=(-s -o "$out" -w '%{http_code}' -X "$BENCH_METHOD" "$@")
    while IFS= read -r h; do args+=(-H "$h"); done <<<"$BENCH_HEADERS"
    [ -n "$BENCH_BODY" ] && args+=(--data "$BENCH_BODY")
    curl "${args[@]}" "http://127.0.0.1:$(port_of "$up" "$target")$BENCH_PATH" || true
}

# --- the instant upstream: nginx answering the registry's own bodies at once ------------------
if [[ " $UPSTREAMS " == *" instant "* ]]; then
    mkdir -p "$TMP/instant"
    locations=""
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        code=$(curl_route registry "$route" direct "$TMP/instant/$name.body" -D "$TMP/instant/$name.head")
        [ "$code" = 200 ] || die "the example registry answered $code to $name: $(head -c 300 "$TMP/instant/$name.body")"
        ctype=$(sed -n 's/^[Cc]ontent-[Tt]ype:[[:space:]]*//p' "$TMP/instant/$name.head" | tr -d '\r')
        # An nginx string in single quotes: escape backslashes and quotes; `$` would be a variable.
        if grep -q '\$' "$TMP/instant/$name.body"; then die "the $name body contains \$, which nginx would read as a variable"; fi
        escaped=$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" "$TMP/instant/$name.body")
        IFS='|' read -r _ _ _ direct_path _ <<<"$route"
        locations+="        location = $direct_path { default_type \"$ctype\"; return 200 '$escaped'; }
"
    done
    cat >"$TMP/instant/nginx.conf" <<EOF
# The instant upstream: every route answered at once with the example registry's own body.
worker_processes $THREADS;
daemon off;
pid $TMP/instant/nginx.pid;
error_log $TMP/instant/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    charset off;
    client_body_temp_path $TMP/instant/body;
    proxy_temp_path $TMP/instant/proxy;
    fastcgi_temp_path $TMP/instant/fastcgi;
    uwsgi_temp_path $TMP/instant/uwsgi;
    scgi_temp_path $TMP/instant/scgi;
    server {
        listen 127.0.0.1:${UP_PORT[instant]};
        keepalive_requests 1000000;
$locations    }
}
EOF
    log "starting the instant upstream (nginx) on 127.0.0.1:${UP_PORT[instant]}"
    "$NGINX" -p "$TMP/instant" -c "$TMP/instant/nginx.conf" -e "$TMP/instant/error.log" >"$TMP/instant.log" 2>&1 &
    PIDS+=("$!")
    wait_port "${UP_PORT[instant]}" "${PIDS[-1]}" instant
fi

# --- per upstream: a gate and an nginx proxy in front of it -----------------------------------
declare -A GATE_PID
for up in $UPSTREAMS; do
    # Policies (volume limit raised), 10,000 cases and gate.toml: bench/gate-files.sh.
    gate_files "$TMP/gate-$up" "$REPO" "${UP_PORT[$up]}" "${GATE_PORT[$up]}"
    log "starting the gate in front of $up on 127.0.0.1:${GATE_PORT[$up]} ($THREADS runtime workers)"
    (cd "$TMP/gate-$up" && RUST_LOG=${RUST_LOG:-warn} TOKIO_WORKER_THREADS=$THREADS exec "$BIN/purpose-gate" serve \
        --config "$TMP/gate-$up/gate.toml") >"$TMP/gate-$up.log" 2>&1 &
    GATE_PID[$up]=$!
    PIDS+=("$!")
    wait_port "${GATE_PORT[$up]}" "${GATE_PID[$up]}" "gate-$up"

    mkdir -p "$TMP/nginx-$up"
    cat >"$TMP/nginx-$up/nginx.conf" <<EOF
# A plain reverse proxy to the same upstream, the gate's routes, keepalive to the upstream.
worker_processes $THREADS;
daemon off;
pid $TMP/nginx-$up/nginx.pid;
error_log $TMP/nginx-$up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-$up/body;
    proxy_temp_path $TMP/nginx-$up/proxy;
    fastcgi_temp_path $TMP/nginx-$up/fastcgi;
    uwsgi_temp_path $TMP/nginx-$up/uwsgi;
    scgi_temp_path $TMP/nginx-$up/scgi;
    upstream registry {
        server 127.0.0.1:${UP_PORT[$up]};
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${NGINX_PORT[$up]};
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
    log "starting nginx in front of $up on 127.0.0.1:${NGINX_PORT[$up]} ($THREADS workers)"
    "$NGINX" -p "$TMP/nginx-$up" -c "$TMP/nginx-$up/nginx.conf" -e "$TMP/nginx-$up/error.log" >"$TMP/nginx-$up.log" 2>&1 &
    PIDS+=("$!")
    wait_port "${NGINX_PORT[$up]}" "${PIDS[-1]}" "nginx-$up"
done

# One request per upstream, route and target, so a misconfiguration fails here and not as a
# fast stream of errors; through the instant upstream the gate must give the same answer as
# through the registry.
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        for target in direct nginx gate; do
            code=$(curl_route "$up" "$route" "$target" "$TMP/check-$up-$target-${route%%|*}.out")
            [ "$code" = 200 ] || die "${route%%|*} via $target to $up answered $code: $(head -c 300 "$TMP/check-$up-$target-${route%%|*}.out")"
        done
    done
done
if [[ " $UPSTREAMS " == *" instant "* && " $UPSTREAMS " == *" registry "* ]]; then
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        cmp -s "$TMP/check-instant-gate-$name.out" "$TMP/check-registry-gate-$name.out" \
            || die "$name: the gate's answer through the instant upstream differs from its answer through the registry"
    done
fi

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p"; }

printf '\nmachine: %s cores, %s, kernel %s; load average at start: %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'closed loop: %s rounds x %s, %s connections, wrk -t%s; gate and nginx with %s workers\n' \
    "$ROUNDS" "$DURATION" "$CONNS" "$WRK_THREADS" "$THREADS"

declare -A RPS P50 P99
: >"$TMP/results.txt"
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        for round in $(seq 1 "$ROUNDS"); do
            for target in direct nginx gate; do
                request_env "$route" "$target"
                out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$REPO/bench/closed.lua" \
                    "http://127.0.0.1:$(port_of "$up" "$target")" | grep '^RESULT')
                log "$up $name $target round $round: $out"
                echo "$up $name $target $out" >>"$TMP/results.txt"
                non2xx=$(field non2xx <<<"$out")
                errors=$(field errors <<<"$out")
                [ "$non2xx" = 0 ] && [ "$errors" = 0 ] || log "warning: $name via $target to $up: $non2xx non-2xx answers, $errors socket errors"
            done
        done
        for target in direct nginx gate; do
            key="$up.$name.$target"
            RPS[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field rps | median)
            P50[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field p50_us | median)
            P99[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field p99_us | median)
        done
    done
done

printf '\n%-9s %-11s %-7s %10s %9s %9s\n' upstream route target "req/s" "p50 ms" "p99 ms"
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        for target in direct nginx gate; do
            key="$up.$name.$target"
            awk -v u="$up" -v n="$name" -v t="$target" -v r="${RPS[$key]}" -v a="${P50[$key]}" -v b="${P99[$key]}" \
                'BEGIN { printf "%-9s %-11s %-7s %10.0f %9.2f %9.2f\n", u, n, t, r, a / 1000, b / 1000 }'
        done
    done
done
printf '\ngate/nginx, requests/s (bar against the instant upstream: >= 0.50)\n'
for route in "${ROUTES[@]}"; do
    name=${route%%|*}
    line=$(printf '%-11s' "$name")
    for up in $UPSTREAMS; do
        line+=$(awk -v u="$up" -v g="${RPS[$up.$name.gate]}" -v x="${RPS[$up.$name.nginx]}" \
            'BEGIN { printf "  %s: %.2f", u, g / x }')
    done
    printf '%s\n' "$line"
done

# --- fixed rate -----------------------------------------------------------------------------
printf '\nfixed rate (%s connections, %s; latency from the scheduled send time)\n' "$PACED_CONNS" "$PACED_DURATION"
printf '%-9s %-11s %-7s %7s %9s %8s %8s %8s %8s %7s\n' upstream route target rate achieved "p50 ms" "p99 ms" "p99.9 ms" "max ms" non2xx
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        if [ -n "${RATE:-}" ]; then
            rate=$RATE
        else
            rate=$(awk -v g="${RPS[$up.$name.gate]}" -v x="${RPS[$up.$name.nginx]}" 'BEGIN { m = (g < x ? g : x); printf "%d", m / 2 }')
        fi
        for target in nginx gate; do
            request_env "$route" "$target"
            out=$(BENCH_RATE=$rate BENCH_CONNS=$PACED_CONNS wrk -t"$PACED_CONNS" -c"$PACED_CONNS" -d"$PACED_DURATION" \
                -s "$REPO/bench/paced.lua" "http://127.0.0.1:$(port_of "$up" "$target")" | grep '^PACED')
            echo "$up $name $target $out" >>"$TMP/results.txt"
            awk -v u="$up" -v n="$name" -v t="$target" -v r="$rate" -v a="$(field achieved <<<"$out")" -v p50="$(field p50_us <<<"$out")" \
                -v p99="$(field p99_us <<<"$out")" -v p999="$(field p999_us <<<"$out")" -v mx="$(field max_us <<<"$out")" \
                -v bad="$(field non2xx <<<"$out")" \
                'BEGIN { printf "%-9s %-11s %-7s %7d %9.0f %8.2f %8.2f %8.2f %8.2f %7d\n", u, n, t, r, a, p50 / 1000, p99 / 1000, p999 / 1000, mx / 1000, bad }'
        done
    done
done

# --- memory and audit -----------------------------------------------------------------------
printf '\n'
for up in $UPSTREAMS; do
    pid=${GATE_PID[$up]}
    hwm=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$pid/status")
    rss=$(sed -n 's/^VmRSS:[[:space:]]*//p' "/proc/$pid/status")
    records=$(cat "$TMP/gate-$up"/audit/*.jsonl 2>/dev/null | wc -l)
    printf 'gate in front of %s: peak resident memory (VmHWM) %s (now %s; bar: <= 64 MiB); %s audit records; ' \
        "$up" "$hwm" "$rss" "$records"
    if "$BIN/purpose-gate" audit verify --dir "$TMP/gate-$up/audit" >"$TMP/verify-$up.log" 2>&1; then
        printf 'audit verify: ok\n'
    else
        printf 'audit verify: FAILED (see %s/verify-%s.log)\n' "$TMP" "$up"
    fi
done
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
