#!/usr/bin/env bash
# The local stack shared by run.sh and bench.sh: a private Postgres and Redis kept in .data/,
# development secrets, and the AUTHD_* variables that point authd at them.
# Source this file (after services.sh); it is not meant to be executed directly.
#
#   local_stack DATABASE [fresh]   start services (reused if running), create DATABASE
#                                  (dropped first when "fresh"), export AUTHD_* (set ones win)
#
# Postgres: 127.0.0.1:54329 (.data/postgres), Redis: 127.0.0.1:63799 (.data/redis).
set -euo pipefail

LOCAL_DATA="$ROOT/.data"
LOCAL_PG_PORT=54329
LOCAL_REDIS_PORT=63799

local_stack() {
    local database=$1 fresh=${2:-}
    ensure_packages
    # .data must be traversable by the postgres user when we are root.
    mkdir -p "$LOCAL_DATA"
    chmod 755 "$LOCAL_DATA"
    [[ -f $LOCAL_DATA/.gitignore ]] || printf '*\n' >"$LOCAL_DATA/.gitignore"

    start_postgres "$LOCAL_DATA/postgres" "$LOCAL_PG_PORT"
    start_redis "$LOCAL_DATA/redis" "$LOCAL_REDIS_PORT"

    local psql=("$AUTHD_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$LOCAL_PG_PORT" -U postgres -d postgres)
    if [[ $fresh == fresh ]]; then
        "${psql[@]}" -c "drop database if exists $database with (force)"
    fi
    if [[ $("${psql[@]}" -tAc "select 1 from pg_database where datname = '$database'") != 1 ]]; then
        echo "creating database $database" >&2
        "${psql[@]}" -c "create database $database"
    fi

    # Development secrets, generated once, readable only by us.
    if [[ ! -s $LOCAL_DATA/key-encryption-key ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 >"$LOCAL_DATA/key-encryption-key")
    fi
    chmod 600 "$LOCAL_DATA/key-encryption-key"
    if [[ ! -s $LOCAL_DATA/admin-password ]]; then
        local pw
        pw=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
        (umask 077 && printf '%s\n' "${pw:0:24}" >"$LOCAL_DATA/admin-password")
    fi
    chmod 600 "$LOCAL_DATA/admin-password"

    : "${AUTHD_DATABASE_URL:=postgres://postgres@127.0.0.1:$LOCAL_PG_PORT/$database}"
    : "${AUTHD_REDIS_URL:=redis://127.0.0.1:$LOCAL_REDIS_PORT}"
    : "${AUTHD_KEY_ENCRYPTION_KEY_FILE:=$LOCAL_DATA/key-encryption-key}"
    : "${AUTHD_BOOTSTRAP_ADMIN_EMAIL:=admin@example.com}"
    : "${AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE:=$LOCAL_DATA/admin-password}"
    : "${AUTHD_MAIL_DIR:=$LOCAL_DATA/mail}"
    export AUTHD_DATABASE_URL AUTHD_REDIS_URL AUTHD_KEY_ENCRYPTION_KEY_FILE \
        AUTHD_BOOTSTRAP_ADMIN_EMAIL AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE AUTHD_MAIL_DIR
    mkdir -p "$AUTHD_MAIL_DIR"
}

# Stops the private Postgres and Redis.
local_stack_stop() {
    stop_redis "$LOCAL_DATA/redis" "$LOCAL_REDIS_PORT"
    stop_postgres "$LOCAL_DATA/postgres"
}
