#!/usr/bin/env bash
# Run authd locally against a private Postgres + Redis kept in .data/.
#
#   ./scripts/run.sh [serve args...]   start services (reused if running), build, run
#   ./scripts/run.sh stop              stop the private Postgres and Redis
#
# Postgres: 127.0.0.1:54329 (.data/postgres), Redis: 127.0.0.1:63799 (.data/redis).
# They keep running after authd exits. Any AUTHD_* variable already set wins.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA="$ROOT/.data"
PG_PORT=54329
REDIS_PORT=63799

# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"

if [[ ${1:-} == stop ]]; then
    stop_redis "$DATA/redis" "$REDIS_PORT"
    stop_postgres "$DATA/postgres"
    exit 0
fi

# Resolve a relative CARGO_TARGET_DIR against the caller's cwd before we cd.
if [[ -n ${CARGO_TARGET_DIR:-} && $CARGO_TARGET_DIR != /* ]]; then
    CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
    export CARGO_TARGET_DIR
fi
cd "$ROOT"

ensure_packages

# .data must be traversable by the postgres user when we are root.
mkdir -p "$DATA"
chmod 755 "$DATA"
[[ -f $DATA/.gitignore ]] || printf '*\n' >"$DATA/.gitignore"

start_postgres "$DATA/postgres" "$PG_PORT"
start_redis "$DATA/redis" "$REDIS_PORT"

# Create the application database once.
psql_admin=("$AUTHD_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
if [[ $("${psql_admin[@]}" -tAc "select 1 from pg_database where datname = 'authd'") != 1 ]]; then
    echo "creating database authd" >&2
    "${psql_admin[@]}" -c 'create database authd'
fi

# Development secrets, generated once, readable only by us.
if [[ ! -s $DATA/key-encryption-key ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$DATA/key-encryption-key")
fi
chmod 600 "$DATA/key-encryption-key"
if [[ ! -s $DATA/admin-password ]]; then
    pw=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
    (umask 077 && printf '%s\n' "${pw:0:24}" >"$DATA/admin-password")
    unset pw
fi
chmod 600 "$DATA/admin-password"

: "${AUTHD_DATABASE_URL:=postgres://postgres@127.0.0.1:$PG_PORT/authd}"
: "${AUTHD_REDIS_URL:=redis://127.0.0.1:$REDIS_PORT}"
: "${AUTHD_KEY_ENCRYPTION_KEY_FILE:=$DATA/key-encryption-key}"
: "${AUTHD_BOOTSTRAP_ADMIN_EMAIL:=admin@example.com}"
: "${AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE:=$DATA/admin-password}"
: "${AUTHD_MAIL_DIR:=$DATA/mail}"
export AUTHD_DATABASE_URL AUTHD_REDIS_URL AUTHD_KEY_ENCRYPTION_KEY_FILE \
    AUTHD_BOOTSTRAP_ADMIN_EMAIL AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE AUTHD_MAIL_DIR
mkdir -p "$AUTHD_MAIL_DIR"

echo "bootstrap admin $AUTHD_BOOTSTRAP_ADMIN_EMAIL: password is in $AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE" >&2

# Build, then exec the binary directly ($CARGO is honoured, as cargo itself does).
"${CARGO:-cargo}" build --release --bin authd
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/authd" serve "$@"
