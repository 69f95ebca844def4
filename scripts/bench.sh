#!/usr/bin/env bash
# Measure authd on this machine: start a release build against a fresh database on the private
# Postgres + Redis of run.sh, drive it with `authd-bench`, print the results and the performance
# targets, stop it.
#
#   ./scripts/bench.sh [authd-bench args...]     e.g. --duration 5 --scenarios health,introspect-repeated
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

local_stack authd_bench fresh
"${CARGO:-cargo}" build --release -p authd --bin authd -p authd-bench --bin authd-bench
AUTHD="${CARGO_TARGET_DIR:-$ROOT/target}/release/authd"
BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/authd-bench"

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ $HTTP_PORT == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done
export AUTHD_GRPC_ADDR="127.0.0.1:$GRPC_PORT"
export AUTHD_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
export AUTHD_RATE_LIMITS=false
: "${AUTHD_REDIS_NAMESPACE:=authd-bench}"
export AUTHD_REDIS_NAMESPACE

LOG="$LOCAL_DATA/bench-server.log"
"$AUTHD" serve >"$LOG" 2>&1 &
SERVER=$!
# shellcheck disable=SC2317  # invoked via trap
stop_server() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT

for _ in $(seq 1 120); do
    if "$AUTHD" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "bench.sh: authd exited; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
"$AUTHD" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null
# Let start-up work (migrations, the first key load) settle before the idle memory sample.
sleep 3

"$BENCH" --target "$AUTHD_GRPC_ADDR" --server-pid "$SERVER" "$@"
