#!/usr/bin/env bash
# Refresh docs/pages/*.png: the three pages the links in mail open, in headless Chromium at a
# laptop's width and a phone's. Starts a throwaway Postgres and Redis and a debug authd (as
# smoke.sh does), registers a user, asks for the three mails, and opens the link of each.
#
#   ./scripts/screenshots.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source-path=SCRIPTDIR source=lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"

log() { printf '[screenshots] %s\n' "$*" >&2; }
fail() {
    printf '[screenshots] error: %s\n' "$*" >&2
    exit 1
}

ensure_packages
ensure_grpcurl
ensure_browser

TMP=$(mktemp -d -t authd-pages.XXXXXXXX)
chmod 755 "$TMP"
SERVER=""
PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    if [[ -n $SERVER ]]; then kill "$SERVER" 2>/dev/null || true; fi
    stop_redis "$TMP/redis" "$REDIS_PORT" || true
    stop_postgres "$TMP/postgres" || true
    rm -rf "$TMP"
}
trap cleanup EXIT
start_postgres "$TMP/postgres" "$PG_PORT" fsync=off
start_redis "$TMP/redis" "$REDIS_PORT"

cd "$ROOT"
"${CARGO:-cargo}" build --quiet --bin authd
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/authd"
mkdir -p "$TMP/mail"
export AUTHD_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export AUTHD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
AUTHD_KEY_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export AUTHD_KEY_ENCRYPTION_KEY
export AUTHD_MAIL_DIR="$TMP/mail"
export AUTHD_GRPC_ADDR="127.0.0.1:$GRPC_PORT"
export AUTHD_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
export AUTHD_PUBLIC_URL="http://127.0.0.1:$HTTP_PORT"
export AUTHD_RATE_LIMITS=false
"$BIN" serve >"$TMP/authd.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 150); do
    "$BIN" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$TMP/authd.log" >&2; fail "authd exited"; }
    sleep 0.2
done

A=$AUTHD_GRPC_ADDR
grpcurl -plaintext -d '{"email": "alice@example.com", "username": "alice", "password": "correct horse battery"}' \
    "$A" auth.v1.AuthService/Register >/dev/null
for rpc in RequestPasswordReset SendVerificationEmail RequestAccountDeletion; do
    grpcurl -plaintext -d '{"email": "alice@example.com"}' "$A" "auth.v1.AuthService/$rpc" >/dev/null
done

OUT="$ROOT/docs/pages"
mkdir -p "$OUT"
steps="["
for page in reset-password verify-email confirm-deletion; do
    link=$(python3 "$ROOT/tests/browser/mail_link.py" "$AUTHD_MAIL_DIR" "/$page" --wait 15) || fail "no mail for /$page"
    steps+="{\"open\": \"$link\"},"
    steps+="{\"screenshot\": \"$OUT/$page-desktop.png\", \"width\": 1280, \"height\": 800},"
    steps+="{\"screenshot\": \"$OUT/$page-phone.png\", \"width\": 390, \"height\": 844},"
done
steps="${steps%,}]"
PYTHONPATH="$AUTHD_BROWSER_PYTHONPATH" python3 "$ROOT/tests/browser/drive.py" <<<"$steps" >/dev/null ||
    fail "the browser failed"
log "wrote $(find "$OUT" -name '*.png' | wc -l) screenshots to docs/pages/"
