#!/usr/bin/env bash
# Run the whole test suite against throwaway Postgres + Redis on free ports.
#
#   ./scripts/test.sh [cargo test args...]
#
# Exports for the tests:
#   AUTHD_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:PORT/postgres (superuser, trust auth)
#   AUTHD_TEST_REDIS_URL     redis://127.0.0.1:PORT
#   AUTHD_TEST_PG_BIN        postgres bin dir (pg_ctl etc.)
#   AUTHD_TEST_PG_DATA       postgres data dir (so tests can restart the server)
#   AUTHD_TEST_PG_USER       OS user owning that dir; run pg_ctl as it
#                            (`runuser -u postgres -- pg_ctl restart -D ...` when root)
#   AUTHD_BROWSER_PYTHONPATH, AUTHD_CHROMIUM, AUTHD_CHROMEDRIVER
#                            Selenium, Chromium and its driver (installed when missing)
# Knobs:
#   AUTHD_TEST_KEEP=1        keep the temp dir (services are still stopped)
#   AUTHD_TEST_CMD='...'     run this shell command instead of `cargo test "$@"`
#                            (args are available to it as "$@"); used to test this script
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source-path=SCRIPTDIR source=lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"

ensure_packages
# Headless Chromium and Selenium, for the browser tests of the mail pages (tests/api/browser.rs).
ensure_browser

TMP=$(mktemp -d -t authd-test.XXXXXXXX)
chmod 755 "$TMP" # the postgres user must traverse it when we are root
PG_DATA="$TMP/postgres"
REDIS_DIR="$TMP/redis"
PG_PORT=""
REDIS_PORT=""

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    trap - EXIT INT TERM
    if [[ -n $REDIS_PORT ]]; then stop_redis "$REDIS_DIR" "$REDIS_PORT" || true; fi
    stop_postgres "$PG_DATA" || true
    if [[ ${AUTHD_TEST_KEEP:-} == 1 ]]; then
        echo "test.sh: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
# EXIT runs cleanup; INT/TERM exit with the conventional status, which triggers it.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
while [[ $REDIS_PORT == "$PG_PORT" ]]; do REDIS_PORT=$(free_port); done

start_postgres "$PG_DATA" "$PG_PORT" fsync=off synchronous_commit=off full_page_writes=off
start_redis "$REDIS_DIR" "$REDIS_PORT"
echo "test.sh: postgres on 127.0.0.1:$PG_PORT, redis on 127.0.0.1:$REDIS_PORT ($TMP)" >&2

export AUTHD_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export AUTHD_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export AUTHD_TEST_PG_BIN="$AUTHD_PG_BIN"
export AUTHD_TEST_PG_DATA="$PG_DATA"
if [[ $(id -u) -eq 0 ]]; then AUTHD_TEST_PG_USER=postgres; else AUTHD_TEST_PG_USER=$(id -un); fi
export AUTHD_TEST_PG_USER

cd "$ROOT"
rc=0
if [[ -n ${AUTHD_TEST_CMD:-} ]]; then
    bash -c "$AUTHD_TEST_CMD" test.sh "$@" || rc=$?
else
    cargo test "$@" || rc=$?
    # Timing-sensitive tests (marked #[ignore]) run afterwards, alone, so that the rest of the
    # suite competing for the two cores cannot skew what they measure. Only for the full suite.
    if [[ $# -eq 0 && $rc -eq 0 ]]; then
        cargo test --test api -- --ignored --test-threads=1 || rc=$?
    fi
fi
exit "$rc"
