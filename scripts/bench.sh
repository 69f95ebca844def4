#!/usr/bin/env bash
# Measure authd on this machine: start a release build against a fresh database on the private
# Postgres + Redis of run.sh, drive it with `authd-bench`, print the results and the performance
# targets, stop it.
#
#   ./scripts/bench.sh [authd-bench args...]     e.g. --duration 5 --scenarios health,introspect-repeated
#   ./scripts/bench.sh --telemetry [args...]     what span and metric export costs: the scenarios
#                                                (default introspect-repeated) run against authd
#                                                without export, then against authd exporting every
#                                                span (always-on sampler) to an OTLP/gRPC sink
#   ./scripts/bench.sh --scale [FRACTION...]     how costs grow with the data: for each fraction
#                                                (default 0 0.1 0.3 1) of 1M users, 1M sessions,
#                                                500k live revocations and 2M audit events, seeded
#                                                with SQL (scripts/bench/seed.sql), start-up time,
#                                                memory, and the per-call figures; results in
#                                                .data/bench-scale.jsonl, charts by
#                                                scripts/bench/charts.py
#   ./scripts/bench.sh --audit-export [MILLIONS]   the audit export at scale: seeds MILLIONS (default
#                                                10) of audit events over 180 days
#                                                (scripts/bench/seed-audit.sql), explains the
#                                                export's and the archive's queries
#                                                (scripts/bench/audit-export.sql), then times
#                                                `authd audit export --before 90d --purge`; all in
#                                                .data/bench-audit-export.txt
#
# The server runs with AUTHD_RATE_LIMITS=false (every bench login comes from 127.0.0.1) and its
# own Redis namespace; any other AUTHD_* variable already set is passed on. Its log goes to
# .data/bench-server.log. Database authd_bench is recreated on every run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source-path=SCRIPTDIR source=lib/local.sh
source "$ROOT/scripts/lib/local.sh"

if [[ -n ${CARGO_TARGET_DIR:-} && $CARGO_TARGET_DIR != /* ]]; then
    CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
    export CARGO_TARGET_DIR
fi
cd "$ROOT"

MODE=plain
if [[ ${1:-} == --telemetry || ${1:-} == --scale || ${1:-} == --audit-export ]]; then
    MODE=${1#--}
    shift
fi

local_stack authd_bench fresh
"${CARGO:-cargo}" build --release -p authd --bin authd -p authd-bench --bin authd-bench --bin otlp-sink
AUTHD="${CARGO_TARGET_DIR:-$ROOT/target}/release/authd"
BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/authd-bench"
SINK="${CARGO_TARGET_DIR:-$ROOT/target}/release/otlp-sink"

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ $HTTP_PORT == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done
export AUTHD_GRPC_ADDR="127.0.0.1:$GRPC_PORT"
export AUTHD_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
export AUTHD_RATE_LIMITS=false
: "${AUTHD_REDIS_NAMESPACE:=authd-bench}"
export AUTHD_REDIS_NAMESPACE

LOG="$LOCAL_DATA/bench-server.log"
SERVER=""
SINK_PID=""
# shellcheck disable=SC2317  # invoked via trap
stop_server() {
    if [[ -n $SERVER ]]; then
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=""
    fi
}
# shellcheck disable=SC2317  # invoked via trap
stop_all() {
    stop_server
    if [[ -n $SINK_PID ]]; then
        kill -TERM "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
    fi
}
trap stop_all EXIT

# Starts authd with the environment given (NAME=value...) and waits until it serves; sets
# STARTUP_S to the seconds from the start of the process to its first SERVING answer.
start_server() {
    local started
    started=$(date +%s.%N)
    env "$@" "$AUTHD" serve >"$LOG" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 1200); do
        if "$AUTHD" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$SERVER" 2>/dev/null; then
            echo "bench.sh: authd exited; its log:" >&2
            cat "$LOG" >&2
            exit 1
        fi
        sleep 0.05
    done
    "$AUTHD" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null
    STARTUP_S=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    # Let start-up work (migrations, the first key load) settle before the idle memory sample.
    sleep 3
}

if [[ $MODE == audit-export ]]; then
    millions=${1:-10}
    [[ $millions =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --audit-export takes a whole number of millions, not $millions" >&2; exit 2; }
    OUT="$LOCAL_DATA/bench-audit-export.txt"
    psql=("$AUTHD_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$AUTHD_DATABASE_URL")
    "$AUTHD" migrate >/dev/null
    {
        echo "# authd audit export, $millions million events over 180 days ($(date -u +%FT%TZ), $(nproc) cores)"
        seeded=$(date +%s)
        "${psql[@]}" -v millions="$millions" -f "$ROOT/scripts/bench/seed-audit.sql"
        echo "seeded in $(($(date +%s) - seeded)) s; table $("${psql[@]}" -tA -c "select pg_size_pretty(pg_total_relation_size('audit_events'))") with its indexes"
        "${psql[@]}" -f "$ROOT/scripts/bench/audit-export.sql"
        echo "## authd audit export --before 90d --out FILE --purge"
        started=$(date +%s.%N)
        "$AUTHD" audit export --before 90d --out "$LOCAL_DATA/bench-audit-export.jsonl" --purge 2>&1
        awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "took %.1f s\n", b - a }'
        echo "file: $(wc -l <"$LOCAL_DATA/bench-audit-export.jsonl") lines, $(du -h "$LOCAL_DATA/bench-audit-export.jsonl" | cut -f1); left in the table: $("${psql[@]}" -tA -c "select count(*) from audit_events")"
        rm -f "$LOCAL_DATA/bench-audit-export.jsonl"
    } 2>&1 | tee "$OUT"
    exit "${PIPESTATUS[0]}"
fi
if [[ $MODE == plain ]]; then
    start_server
    "$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" "$@"
    exit 0
fi

# The resident set (VmRSS) or its peak over the process's life (VmHWM) of the server, in MB.
memory_mb() { awk -v field="$1:" '$1 == field { printf "%.1f", $2 / 1024 }' "/proc/$SERVER/status"; }

if [[ $MODE == scale ]]; then
    (($# > 0)) || set -- 0 0.1 0.3 1
    RESULTS="$LOCAL_DATA/bench-scale.jsonl"
    : >"$RESULTS"
    psql=("$AUTHD_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$AUTHD_DATABASE_URL")
    for fraction in "$@"; do
        [[ $fraction =~ ^(0|[1-9][0-9]*)(\.[0-9]+)?$ ]] || { echo "bench.sh: --scale takes fractions such as 0.1, not $fraction" >&2; exit 2; }
        echo "## scale $fraction: seeding" >&2
        local_stack authd_bench fresh
        "$AUTHD" migrate >/dev/null
        seeded=$(date +%s)
        "${psql[@]}" -v scale="$fraction" -f "$ROOT/scripts/bench/seed.sql"
        echo "seeded in $(($(date +%s) - seeded)) s" >&2
        counts=$("${psql[@]}" -tA -F' ' -c "select (select count(*) from users), (select count(*) from sessions),
            (select count(*) from revocations where expires_at > now()), (select count(*) from audit_events),
            md5('authd-bench-heavy')::uuid")
        read -r users sessions revocations events heavy <<<"$counts"
        start_server
        startup=$STARTUP_S
        idle=$(memory_mb VmRSS)
        # Per-call latency with one call in flight, then hot Introspect throughput at full load.
        "$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" --scenarios login,list-users,list-audit,list-audit-type \
            --concurrency 1 --connections 1 --duration 5 --warmup 1 --audit-user "$heavy" \
            --json "$LOCAL_DATA/bench-scale-calls.json" | { grep -E '^\| [a-z-]+ ' || true; } >&2
        "$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" --scenarios introspect-repeated \
            --duration 5 --warmup 1 --json "$LOCAL_DATA/bench-scale-load.json" | { grep -E '^\| [a-z-]+ ' || true; } >&2
        peak=$(memory_mb VmHWM)
        stop_server
        printf '{"fraction":%s,"users":%s,"sessions":%s,"live_revocations":%s,"audit_events":%s,"startup_s":%s,"idle_rss_mb":%s,"peak_rss_mb":%s,"calls":%s,"load":%s}\n' \
            "$fraction" "$users" "$sessions" "$revocations" "$events" "$startup" "$idle" "$peak" \
            "$(cat "$LOCAL_DATA/bench-scale-calls.json")" "$(cat "$LOCAL_DATA/bench-scale-load.json")" >>"$RESULTS"
    done
    python3 "$ROOT/scripts/bench/charts.py" table "$RESULTS"
    exit 0
fi

# --telemetry: the same scenarios without export, then exporting every span.
if [[ " $* " != *" --scenarios "* ]]; then set -- --scenarios introspect-repeated "$@"; fi
SINK_ADDR="127.0.0.1:$(free_port)"
"$SINK" "$SINK_ADDR" >"$LOCAL_DATA/otlp-sink.log" 2>&1 &
SINK_PID=$!
# Rounds of off then on (AUTHD_BENCH_ROUNDS, default 4), so a slow spell of this shared machine
# falls on both sides of a pair; the figure is the median of the pairs' ratios.
ROUNDS=${AUTHD_BENCH_ROUNDS:-4}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: AUTHD_BENCH_ROUNDS must be a positive number" >&2; exit 2; }
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, telemetry off"
    start_server OTEL_SDK_DISABLED=true
    "$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" "$@" | tee "$LOCAL_DATA/bench-telemetry-off-$round.txt"
    stop_server
    echo "## round $round, telemetry on: every span and the metrics exported over OTLP/gRPC to $SINK_ADDR"
    start_server OTEL_EXPORTER_OTLP_ENDPOINT="http://$SINK_ADDR" OTEL_TRACES_SAMPLER=always_on OTEL_METRIC_EXPORT_INTERVAL=5000
    "$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" "$@" | tee "$LOCAL_DATA/bench-telemetry-on-$round.txt"
    stop_server
done
kill -TERM "$SINK_PID"
wait "$SINK_PID" || true
SINK_PID=""
cat "$LOCAL_DATA/otlp-sink.log"
# The first scenario row of a run: its throughput (calls/s) and the server's CPU per call (µs).
first_row() { awk -F'|' '/^\| [a-z-]+ +\|/ && $4 ~ /[0-9]/ { gsub(/[^0-9.]/, "", $4); gsub(/[^0-9.]/, "", $10); print $4, $10; exit }' "$1"; }
for round in $(seq 1 "$ROUNDS"); do
    echo "$(first_row "$LOCAL_DATA/bench-telemetry-off-$round.txt") $(first_row "$LOCAL_DATA/bench-telemetry-on-$round.txt")"
done | awk '
    $1 + 0 <= 0 || $3 + 0 <= 0 { print "bench.sh: a run of pair " NR " measured no calls" > "/dev/stderr"; exit 1 }
    { ratio[NR] = $3 / $1; cpus = ($2 + 0 > 0 && $4 + 0 > 0)
      cpu[NR] = cpus ? $4 / $2 : 1
      printf "pair %d: %.0f/s off, %.0f/s on: %.1f%% lower", NR, $1, $3, (1 - ratio[NR]) * 100
      if (cpus) printf "; server CPU %.1f µs/call off, %.1f on (+%.1f%%)", $2, $4, (cpu[NR] - 1) * 100
      printf "\n" }
    function median(a, n,   i, j, t, b) {
        for (i = 1; i <= n; i++) b[i] = a[i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
        return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
    }
    END {
        printf "telemetry: median of %d pairs: throughput %.1f%% lower with every span exported (goal under 10%%); server CPU per call %.1f%% higher\n",
            NR, (1 - median(ratio, NR)) * 100, (median(cpu, NR) - 1) * 100
    }'
