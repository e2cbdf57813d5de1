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
# PACED_DURATION [DURATION], BASE_PORT [18080], KEEP=1 keeps the temp dir (audit logs, configs, logs),
# STORE_URL, STORE_RATE [5000], STORE_PACED_CONNS [64] (below).
#
# STORE_URL=postgres://user@host:port/db adds a fourth target per upstream, `gate+store`: the same
# gate with `[store]` shipping its log into a fresh database `pg_bench_proxy` (dropped and created
# through STORE_URL) on the same machine, measured in the same alternation; the table then shows
# gate+store/gate. A fixed-rate run of STORE_RATE [5000] requests/s against it reports the shipping
# lag (p50/p99 from the gate's `purpose_gate_store_ship_lag_seconds` histogram over that run), and
# at the end the store must hold every record of that gate's local log.
#
# PIN=P:R (e.g. PIN=0:1) pins the proxies under test (gate, gate+store, nginx) to CPUs P and
# everything else (wrk, the upstreams, and every PostgreSQL process, whose affinity is put back at
# exit) to CPUs R, so that a proxy's figures show its own cost and not the machine's other work
# on its cores: what a deployment with PostgreSQL on a machine of its own gives the gate.
# THREADS then defaults to the number of CPUs in P. Needs taskset (util-linux) and, with
# STORE_URL, the right to change PostgreSQL's affinity (root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=bench/gate-files.sh
. "$REPO/bench/gate-files.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
PROXY_PIN=()
REST_PIN=()
if [ -n "${PIN:-}" ]; then
    [[ $PIN == *:* ]] || { printf 'bench/proxy.sh: PIN is P:R, two CPU lists (e.g. 0:1)\n' >&2; exit 2; }
    PROXY_PIN=(taskset -c "${PIN%%:*}")
    REST_PIN=(taskset -c "${PIN#*:}")
    "${PROXY_PIN[@]}" true && "${REST_PIN[@]}" true \
        || { printf 'bench/proxy.sh: PIN=%s: not CPU lists taskset accepts\n' "$PIN" >&2; exit 2; }
fi
THREADS=${THREADS:-$("${PROXY_PIN[@]}" nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PACED_CONNS=${PACED_CONNS:-16}
PACED_DURATION=${PACED_DURATION:-$DURATION}
BASE_PORT=${BASE_PORT:-18080}
UPSTREAMS=${UPSTREAMS:-instant registry}
STORE_RATE=${STORE_RATE:-5000}
STORE_PACED_CONNS=${STORE_PACED_CONNS:-64}
# registry: upstream +1, nginx +2, gate +3, gate+store +7; instant: upstream +4, nginx +5,
# gate +6, gate+store +8.
declare -A UP_PORT=([registry]=$((BASE_PORT + 1)) [instant]=$((BASE_PORT + 4)))
declare -A NGINX_PORT=([registry]=$((BASE_PORT + 2)) [instant]=$((BASE_PORT + 5)))
declare -A GATE_PORT=([registry]=$((BASE_PORT + 3)) [instant]=$((BASE_PORT + 6)))
declare -A STORE_GATE_PORT=([registry]=$((BASE_PORT + 7)) [instant]=$((BASE_PORT + 8)))
# The admin listeners (/metrics): gate+store registry +9, instant +10; gate registry +11,
# instant +12.
declare -A STORE_ADMIN_PORT=([registry]=$((BASE_PORT + 9)) [instant]=$((BASE_PORT + 10)))
declare -A ADMIN_PORT=([registry]=$((BASE_PORT + 11)) [instant]=$((BASE_PORT + 12)))
TARGETS="direct nginx gate"
if [ -n "${STORE_URL:-}" ]; then
    TARGETS="direct nginx gate gate+store"
    command -v psql >/dev/null || { printf 'bench/proxy.sh: STORE_URL needs psql\n' >&2; exit 2; }
fi
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

for port in "${UP_PORT[@]}" "${NGINX_PORT[@]}" "${GATE_PORT[@]}" "${STORE_GATE_PORT[@]}" "${STORE_ADMIN_PORT[@]}" "${ADMIN_PORT[@]}"; do
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
PG_AFFINITY=
cleanup() {
    if [ -n "$PG_AFFINITY" ]; then
        for pid in $(pgrep -u postgres 2>/dev/null); do taskset -p -c "$PG_AFFINITY" "$pid" >/dev/null 2>&1 || true; done
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -n "${PIN:-}" ] && [ -n "${STORE_URL:-}" ]; then
    # PostgreSQL (already running) goes to the other CPUs too; its new backends inherit that
    # from the postmaster. Put back at exit.
    postmaster=$(pgrep -o -u postgres) || die "PIN with STORE_URL: no PostgreSQL process on this machine"
    PG_AFFINITY=$(taskset -p -c "$postmaster" | sed 's/.*: //')
    for pid in $(pgrep -u postgres); do
        taskset -p -c "${PIN#*:}" "$pid" >/dev/null || die "PIN: cannot set the CPUs of PostgreSQL process $pid (run as root)"
    done
fi
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
TOKIO_WORKER_THREADS=$THREADS "${REST_PIN[@]}" "$BIN/examples/example_registry" \
    --listen "127.0.0.1:${UP_PORT[registry]}" --data "$REPO/examples/data" >"$TMP/registry.log" 2>&1 &
PIDS+=("$!")
wait_port "${UP_PORT[registry]}" "${PIDS[-1]}" registry

# --- requests -------------------------------------------------------------------------------
TOKEN=$("$BIN/examples/mint_token" --key "$REPO/examples/demo/keys/demo-signing-key.pem" \
    --sub emp-042 --org 0363 --roles vergunningverlener --ttl 7200)
CASE=Z-BENCH-004711
BRP_BODY='{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam","verblijfplaats"]}'
# What the gate asks the registry for the same lookup: the fields plus the BSN that identifies each
# person for its release decision (removed again by minimisation). The instant upstream answers
# that request's answer, so the gate does there exactly what it does in front of the registry.
BRP_UPSTREAM_BODY='{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam","verblijfplaats","burgerservicenummer"]}'
# Route table: name | method | gate/nginx path | direct path | body
ROUTES=(
    "brp-lookup|POST|/haalcentraal/api/brp/personen|/personen|$BRP_BODY"
    "rdw-holder|GET|/rdw/voertuigen/XX999X/tenaamstelling|/voertuigen/XX999X/tenaamstelling|"
)
# port_of UPSTREAM TARGET
port_of() { case $2 in direct) echo "${UP_PORT[$1]}" ;; nginx) echo "${NGINX_PORT[$1]}" ;; gate) echo "${GATE_PORT[$1]}" ;; gate+store) echo "${STORE_GATE_PORT[$1]}" ;; esac; }

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
        fetch=${route/"$BRP_BODY"/"$BRP_UPSTREAM_BODY"}
        code=$(curl_route registry "$fetch" direct "$TMP/instant/$name.body" -D "$TMP/instant/$name.head")
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
    "${REST_PIN[@]}" "$NGINX" -p "$TMP/instant" -c "$TMP/instant/nginx.conf" -e "$TMP/instant/error.log" >"$TMP/instant.log" 2>&1 &
    PIDS+=("$!")
    wait_port "${UP_PORT[instant]}" "${PIDS[-1]}" instant
fi

# --- per upstream: a gate and an nginx proxy in front of it -----------------------------------
declare -A GATE_PID STORE_GATE_PID STORE_DB
# start_gate NAME PORT: runs the gate of $TMP/NAME/gate.toml (log $TMP/NAME.log) until it
# listens on PORT; its pid in STARTED_PID.
start_gate() {
    (cd "$TMP/$1" && RUST_LOG=${RUST_LOG:-warn} TOKIO_WORKER_THREADS=$THREADS exec "${PROXY_PIN[@]}" "$BIN/purpose-gate" serve \
        --config "$TMP/$1/gate.toml") >"$TMP/$1.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_port "$2" "$STARTED_PID" "$1"
}
for up in $UPSTREAMS; do
    # Policies (volume limit raised), 10,000 cases and gate.toml: bench/gate-files.sh.
    gate_files "$TMP/gate-$up" "$REPO" "${UP_PORT[$up]}" "${GATE_PORT[$up]}"
    printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "${ADMIN_PORT[$up]}" >>"$TMP/gate-$up/gate.toml"
    log "starting the gate in front of $up on 127.0.0.1:${GATE_PORT[$up]} ($THREADS runtime workers)"
    start_gate "gate-$up" "${GATE_PORT[$up]}"
    GATE_PID[$up]=$STARTED_PID

    if [ -n "${STORE_URL:-}" ]; then
        # The same gate files, its own audit directory, shipping into a fresh database.
        store_gate_files "$TMP/gate-store-$up" "$REPO" "${UP_PORT[$up]}" "${STORE_GATE_PORT[$up]}" "$BIN" \
            "$STORE_URL" "pg_bench_proxy_$up" "bench-gate-store-$up" || exit 1
        STORE_DB[$up]=$STORE_DB_URL
        printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "${STORE_ADMIN_PORT[$up]}" >>"$TMP/gate-store-$up/gate.toml"
        log "starting the gate with [store] in front of $up on 127.0.0.1:${STORE_GATE_PORT[$up]}"
        start_gate "gate-store-$up" "${STORE_GATE_PORT[$up]}"
        STORE_GATE_PID[$up]=$STARTED_PID
    fi

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
    "${PROXY_PIN[@]}" "$NGINX" -p "$TMP/nginx-$up" -c "$TMP/nginx-$up/nginx.conf" -e "$TMP/nginx-$up/error.log" >"$TMP/nginx-$up.log" 2>&1 &
    PIDS+=("$!")
    wait_port "${NGINX_PORT[$up]}" "${PIDS[-1]}" "nginx-$up"
done

# One request per upstream, route and target, so a misconfiguration fails here and not as a
# fast stream of errors; through the instant upstream the gate must give the same answer as
# through the registry.
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        for target in $TARGETS; do
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

HZ=$(getconf CLK_TCK)
# pid_of UPSTREAM TARGET: the gate's pid (empty for direct and nginx).
pid_of() { case $2 in gate) echo "${GATE_PID[$1]}" ;; gate+store) echo "${STORE_GATE_PID[$1]}" ;; esac; }
# cpu_ticks PID: user + system CPU time of a process, in clock ticks (0 without a pid).
cpu_ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
# pg_ticks: user + system CPU time of every process of the postgres user.
pg_ticks() { local t=0 p; for p in $(pgrep -u postgres 2>/dev/null); do t=$(( t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo "$t"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p"; }

printf '\nmachine: %s cores, %s, kernel %s; load average at start: %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'closed loop: %s rounds x %s, %s connections, wrk -t%s; gate and nginx with %s workers\n' \
    "$ROUNDS" "$DURATION" "$CONNS" "$WRK_THREADS" "$THREADS"
[ -z "${PIN:-}" ] || printf 'pinned: gate, gate+store and nginx on CPUs %s; wrk, upstreams and PostgreSQL on CPUs %s\n' \
    "${PIN%%:*}" "${PIN#*:}"

declare -A RPS P50 P99
: >"$TMP/results.txt"
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        for round in $(seq 1 "$ROUNDS"); do
            for target in $TARGETS; do
                request_env "$route" "$target"
                gate_pid=$(pid_of "$up" "$target")
                cpu_before=$(cpu_ticks "$gate_pid"); pg_before=$(pg_ticks)
                out=$("${REST_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$REPO/bench/closed.lua" \
                    "http://127.0.0.1:$(port_of "$up" "$target")" | grep '^RESULT')
                if [ -n "$gate_pid" ]; then
                    # CPU per request (µs) of the gate process and of all PostgreSQL processes.
                    out+=$(awk -v g=$(( $(cpu_ticks "$gate_pid") - cpu_before )) -v p=$(( $(pg_ticks) - pg_before )) \
                        -v n="$(field requests <<<"$out")" -v hz="$HZ" \
                        'BEGIN { printf " gate_cpu_us=%.1f pg_cpu_us=%.1f", g * 1e6 / hz / n, p * 1e6 / hz / n }')
                fi
                log "$up $name $target round $round: $out"
                echo "$up $name $target $out" >>"$TMP/results.txt"
                non2xx=$(field non2xx <<<"$out")
                errors=$(field errors <<<"$out")
                [ "$non2xx" = 0 ] && [ "$errors" = 0 ] || log "warning: $name via $target to $up: $non2xx non-2xx answers, $errors socket errors"
            done
        done
        for target in $TARGETS; do
            key="$up.$name.$target"
            RPS[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field rps | median)
            P50[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field p50_us | median)
            P99[$key]=$(grep "^$up $name $target " "$TMP/results.txt" | field p99_us | median)
        done
    done
done

printf '\n%-9s %-11s %-10s %10s %9s %9s\n' upstream route target "req/s" "p50 ms" "p99 ms"
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        for target in $TARGETS; do
            key="$up.$name.$target"
            awk -v u="$up" -v n="$name" -v t="$target" -v r="${RPS[$key]}" -v a="${P50[$key]}" -v b="${P99[$key]}" \
                'BEGIN { printf "%-9s %-11s %-10s %10.0f %9.2f %9.2f\n", u, n, t, r, a / 1000, b / 1000 }'
        done
    done
done
# ratios A B: requests/s of target A over target B, per route and upstream.
ratios() {
    local route name line up
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        line=$(printf '%-11s' "$name")
        for up in $UPSTREAMS; do
            line+=$(awk -v u="$up" -v g="${RPS[$up.$name.$1]}" -v x="${RPS[$up.$name.$2]}" \
                'BEGIN { printf "  %s: %.2f", u, g / x }')
        done
        printf '%s\n' "$line"
    done
}
printf '\ngate/nginx, requests/s (bar against the instant upstream: >= 0.50)\n'
ratios gate nginx
printf '\nCPU per request in the closed-loop runs (median of the rounds, µs; PostgreSQL = all its processes)\n'
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        for target in ${TARGETS#direct nginx }; do
            printf '%-9s %-11s %-10s gate %7.1f   postgres %7.1f\n' "$up" "$name" "$target" \
                "$(grep "^$up $name $target " "$TMP/results.txt" | grep RESULT | field gate_cpu_us | median)" \
                "$(grep "^$up $name $target " "$TMP/results.txt" | grep RESULT | field pg_cpu_us | median)"
        done
    done
done
if [ -n "${STORE_URL:-}" ]; then
    printf '\ngate+store/gate, requests/s (bar: >= 0.90)\n'
    ratios gate+store gate
fi

# --- fixed rate -----------------------------------------------------------------------------
# other_services: the long-running services of other users on this machine (they share its cores).
other_services() {
    ps -eo user=,comm= | awk '$1 != "'"$(id -un)"'" || $2 ~ /^(postgres|mariadbd|redis-server|beam.smp|mosquitto|nats-server)$/ { print $2 }' \
        | grep -E '^(postgres|mariadbd|mysqld|redis-server|beam.smp|mosquitto|nats-server)$' | sort | uniq -c \
        | awk '{ printf "%s%s (%d)", (NR > 1 ? ", " : ""), $2, $1 }'
}
admin_of() { case $2 in gate) echo "${ADMIN_PORT[$1]}" ;; gate+store) echo "${STORE_ADMIN_PORT[$1]}" ;; esac; }
# sync_buckets ADMIN_PORT: cumulative buckets of the audit writer's fdatasync histogram.
sync_buckets() {
    curl -s "http://127.0.0.1:$1/metrics" \
        | sed -n 's/^purpose_gate_audit_fdatasync_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p'
}
# sync_summary BEFORE AFTER: how many fdatasync calls the run made and how many took longer
# than 10, 25 and 50 ms (stalls of the request path: every request waits for its record).
sync_summary() {
    paste -d' ' <(echo "$1") <(echo "$2") | awk '
        { le[NR] = $1; n[NR] = $4 - $2 } END {
            total = n[NR]; a = b = c = 0
            for (i = 1; i <= NR; i++) { if (le[i] == "0.01") a = n[i]; if (le[i] == "0.025") b = n[i]; if (le[i] == "0.05") c = n[i] }
            printf "%d calls, %d > 10 ms, %d > 25 ms, %d > 50 ms", total, total - a, total - b, total - c }'
}
# quiet_store: lets the store gates ship what the closed-loop runs left and PostgreSQL finish its
# work on those rows (vacuum, checkpoint), so that it does not run beside the fixed-rate runs.
quiet_store() {
    [ -n "${STORE_URL:-}" ] || return 0
    local up backlog
    for up in $UPSTREAMS; do
        for _ in $(seq 1 600); do
            backlog=$(curl -s "http://127.0.0.1:${STORE_ADMIN_PORT[$up]}/metrics" | sed -n 's/^purpose_gate_store_backlog_records \([0-9]*\)$/\1/p')
            [ "$backlog" = 0 ] && break
            sleep 0.1
        done
        psql -q "${STORE_DB[$up]}" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
    done
    sleep 2
}
quiet_store
printf '\nfixed rate (%s connections, %s; latency from the scheduled send time; other services on the machine: %s)\n' \
    "$PACED_CONNS" "$PACED_DURATION" "$(other_services)"
printf '%-9s %-11s %-10s %7s %9s %8s %8s %8s %8s %7s\n' upstream route target rate achieved "p50 ms" "p99 ms" "p99.9 ms" "max ms" non2xx
# The gates without a store first, then the store gates (whose PostgreSQL work would otherwise
# run beside the next gate's run).
for paced_targets in "nginx gate" "gate+store"; do
    [[ " $TARGETS " == *" ${paced_targets%% *} "* ]] || continue
for up in $UPSTREAMS; do
    for route in "${ROUTES[@]}"; do
        name=${route%%|*}
        if [ -n "${RATE:-}" ]; then
            rate=$RATE
        else
            rate=$(awk -v g="${RPS[$up.$name.gate]}" -v x="${RPS[$up.$name.nginx]}" 'BEGIN { m = (g < x ? g : x); printf "%d", m / 2 }')
        fi
        for target in $paced_targets; do
            request_env "$route" "$target"
            [ "$target" = nginx ] || syncs_before=$(sync_buckets "$(admin_of "$up" "$target")")
            out=$(BENCH_RATE=$rate BENCH_CONNS=$PACED_CONNS "${REST_PIN[@]}" wrk -t"$PACED_CONNS" -c"$PACED_CONNS" -d"$PACED_DURATION" \
                -s "$REPO/bench/paced.lua" "http://127.0.0.1:$(port_of "$up" "$target")" | grep '^PACED')
            echo "$up $name $target $out" >>"$TMP/results.txt"
            awk -v u="$up" -v n="$name" -v t="$target" -v r="$rate" -v a="$(field achieved <<<"$out")" -v p50="$(field p50_us <<<"$out")" \
                -v p99="$(field p99_us <<<"$out")" -v p999="$(field p999_us <<<"$out")" -v mx="$(field max_us <<<"$out")" \
                -v bad="$(field non2xx <<<"$out")" \
                'BEGIN { printf "%-9s %-11s %-10s %7d %9.0f %8.2f %8.2f %8.2f %8.2f %7d\n", u, n, t, r, a, p50 / 1000, p99 / 1000, p999 / 1000, mx / 1000, bad }'
            if [ "$target" != nginx ]; then
                syncs_after=$(sync_buckets "$(admin_of "$up" "$target")")
                printf '%44s audit fdatasync in this run: %s\n' "" "$(sync_summary "$syncs_before" "$syncs_after")" | tee -a "$TMP/results.txt"
            fi
        done
    done
done
done

# --- shipping lag at STORE_RATE ----------------------------------------------------------------
# lag_buckets UPSTREAM: the cumulative buckets of the lag histogram, "le count" per line.
lag_buckets() {
    curl -s "http://127.0.0.1:${STORE_ADMIN_PORT[$1]}/metrics" \
        | sed -n 's/^purpose_gate_store_ship_lag_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p'
}
# lag_quantile Q BEFORE AFTER: the upper bound of the bucket holding quantile Q of the records
# shipped between the two readings.
lag_quantile() {
    paste -d' ' <(echo "$2") <(echo "$3") | awk -v q="$1" '
        { le[NR] = $1; n[NR] = $4 - $2 } END {
            total = n[NR]; if (total == 0) { print "none"; exit }
            for (i = 1; i <= NR; i++) if (n[i] >= q * total) { print le[i] " s"; exit } }'
}
if [ -n "${STORE_URL:-}" ]; then
    quiet_store
    printf '\nshipping lag at %s requests/s (brp-lookup, %s connections, %s; lag = record time to store commit)\n' \
        "$STORE_RATE" "$STORE_PACED_CONNS" "$PACED_DURATION"
    for up in $UPSTREAMS; do
        route=${ROUTES[0]}
        request_env "$route" gate+store
        # Start from an empty backlog, so the run's records are the only ones observed.
        for _ in $(seq 1 600); do
            backlog=$(curl -s "http://127.0.0.1:${STORE_ADMIN_PORT[$up]}/metrics" | sed -n 's/^purpose_gate_store_backlog_records \([0-9]*\)$/\1/p')
            [ "$backlog" = 0 ] && break
            sleep 0.1
        done
        before=$(lag_buckets "$up")
        out=$(BENCH_RATE=$STORE_RATE BENCH_CONNS=$STORE_PACED_CONNS "${REST_PIN[@]}" wrk -t"$STORE_PACED_CONNS" -c"$STORE_PACED_CONNS" -d"$PACED_DURATION" \
            -s "$REPO/bench/paced.lua" "http://127.0.0.1:$(port_of "$up" gate+store)" | grep '^PACED')
        sleep 2
        after=$(lag_buckets "$up")
        echo "$up lag $out" >>"$TMP/results.txt"
        printf '%-9s achieved %.0f req/s, p99 %.2f ms, non2xx %d; records shipped in the run: %d; lag p50 <= %s, p99 <= %s, p99.9 <= %s\n' \
            "$up" "$(field achieved <<<"$out")" "$(awk -v v="$(field p99_us <<<"$out")" 'BEGIN { print v / 1000 }')" \
            "$(field non2xx <<<"$out")" \
            "$(( $(tail -1 <<<"$after" | cut -d' ' -f2) - $(tail -1 <<<"$before" | cut -d' ' -f2) ))" \
            "$(lag_quantile 0.5 "$before" "$after")" "$(lag_quantile 0.99 "$before" "$after")" "$(lag_quantile 0.999 "$before" "$after")"
    done
fi

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
    if [ -n "${STORE_URL:-}" ]; then
        # Every record of the store gate's local log must be in the store, once.
        for _ in $(seq 1 100); do
            local_n=$(cat "$TMP/gate-store-$up"/audit/*.jsonl | wc -l)
            stored_n=$(psql -At "${STORE_DB[$up]}" -c "SELECT count(*) FROM pg_records")
            [ "$local_n" = "$stored_n" ] && break
            sleep 0.2
        done
        distinct_n=$(psql -At "${STORE_DB[$up]}" -c "SELECT count(DISTINCT (gate_id, seq)) FROM pg_records")
        printf 'gate+store in front of %s: %s local records, %s in the store (%s distinct); ' "$up" "$local_n" "$stored_n" "$distinct_n"
        if "$BIN/purpose-gate" audit verify --db "${STORE_DB[$up]}" >"$TMP/verify-db-$up.log" 2>&1; then
            printf 'audit verify --db: ok\n'
        else
            printf 'audit verify --db: FAILED (see %s/verify-db-%s.log)\n' "$TMP" "$up"
        fi
    fi
done
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
