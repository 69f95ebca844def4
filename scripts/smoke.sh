#!/usr/bin/env bash
# The README's grpcurl walkthrough, run as written against a fresh authd, with real grpcurl.
#
#   ./scripts/smoke.sh
#
# Starts a throwaway Postgres and Redis (as test.sh does), an authd set up the way run.sh sets
# it up (bootstrap admin, password in .data/admin-password), then runs the fenced `sh` block of
# the README's "Trying it with grpcurl" section. Only the two listen addresses are rewritten (to
# free ports). Every answer is checked, then: `grpcurl describe` of every service (reflection
# v1alpha, which this grpcurl asks for), health per service, and an INVALID_ARGUMENT whose
# google.rpc.BadRequest grpcurl shows by field name.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source-path=SCRIPTDIR source=lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"

log() { printf '[smoke] %s\n' "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

ensure_packages
ensure_grpcurl
ensure_jq
ensure_browser
command -v curl >/dev/null 2>&1 || _tools_install_debian curl

TMP=$(mktemp -d -t authd-smoke.XXXXXXXX)
chmod 755 "$TMP"
PG_PORT="" REDIS_PORT="" SERVER=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    trap - EXIT INT TERM
    if [[ -n $SERVER ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    if [[ -n $REDIS_PORT ]]; then stop_redis "$TMP/redis" "$REDIS_PORT" || true; fi
    stop_postgres "$TMP/postgres" || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
start_postgres "$TMP/postgres" "$PG_PORT" fsync=off
start_redis "$TMP/redis" "$REDIS_PORT"

# The working directory of the walkthrough, laid out as run.sh lays out the checkout.
WORK="$TMP/work"
mkdir -p "$WORK/.data/mail"
(umask 077 && head -c 32 /dev/urandom | base64 >"$WORK/.data/key-encryption-key")
pw=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
(umask 077 && printf '%s\n' "${pw:0:24}" >"$WORK/.data/admin-password")

cd "$ROOT"
log "building authd"
"${CARGO:-cargo}" build --quiet --bin authd
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/authd"

export AUTHD_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export AUTHD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export AUTHD_KEY_ENCRYPTION_KEY_FILE="$WORK/.data/key-encryption-key"
export AUTHD_BOOTSTRAP_ADMIN_EMAIL=admin@example.com
export AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE="$WORK/.data/admin-password"
export AUTHD_MAIL_DIR="$WORK/.data/mail"
export AUTHD_GRPC_ADDR="127.0.0.1:$GRPC_PORT"
export AUTHD_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
"$BIN" serve >"$TMP/authd.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 150); do
    "$BIN" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$TMP/authd.log" >&2; fail "authd exited"; }
    sleep 0.2
done
"$BIN" healthcheck --addr "$AUTHD_GRPC_ADDR" >/dev/null || fail "authd never became healthy"

# The README's block, as written.
block=$(awk '
    /^## Trying it with grpcurl/ { section = 1; next }
    section && /^## / { exit }
    section && /^```sh$/ { inside = 1; next }
    section && inside && /^```$/ { exit }
    inside { print }
' "$ROOT/README.md")
[[ -n $block ]] || fail "no sh block under \"Trying it with grpcurl\" in README.md"
block=${block//127.0.0.1:50051/127.0.0.1:$GRPC_PORT}
block=${block//127.0.0.1:8080/127.0.0.1:$HTTP_PORT}

log "running the README walkthrough ($(grep -c grpcurl <<<"$block") grpcurl lines)"
out="$TMP/walkthrough.out"
(
    cd "$WORK"
    set -euo pipefail
    eval "$block"
    # What the block left in its variables.
    [[ $TOKEN == ey* ]] || { echo "TOKEN is not an access token: $TOKEN" >&2; exit 1; }
    [[ $ADMIN == ey* ]] || { echo "ADMIN is not an access token: $ADMIN" >&2; exit 1; }
    [[ $KEY == authd_* ]] || { echo "KEY is not an API key: $KEY" >&2; exit 1; }
) >"$out" 2>&1 || { cat "$out" >&2; fail "the README walkthrough"; }

expect() {
    local what=$1 pattern=$2
    grep -qE -- "$pattern" "$out" || { cat "$out" >&2; fail "$what: no line matching /$pattern/"; }
}
expect "list" '^auth\.v1\.AuthService$'
expect "list" '^auth\.v1\.TokenService$'
expect "list" '^grpc\.health\.v1\.Health$'
expect "health" '"status": "SERVING"'
expect "Register and GetMe" '"username": "alice"'
expect "ListSessions" '"deviceName": "laptop"'
expect "Introspect" '"active": true'
expect "Introspect" '"tokenType": "access_token"'
expect "GetJwks" '"jwksJson":'
expect "the HTTP JWKS" '^\{"keys":\[\{'
expect "Envoy Check" '"key": "x-authd-sub"'
expect "forward-auth" '^200$'

A="127.0.0.1:$GRPC_PORT"
log "describing every service"
services=$(grpcurl -plaintext "$A" list)
for service in $services; do
    [[ $service == grpc.reflection.* ]] && continue
    described=$(grpcurl -plaintext "$A" describe "$service") || fail "describe $service"
    grep -q "^$service is a service:" <<<"$described" || fail "describe $service: $described"
    if [[ $service == auth.v1.* ]]; then
        health=$(grpcurl -plaintext -d "{\"service\": \"$service\"}" "$A" grpc.health.v1.Health/Check)
        grep -q '"status": "SERVING"' <<<"$health" || fail "health of $service: $health"
    fi
done
for message in google.rpc.BadRequest google.rpc.RetryInfo auth.v1.UpdateMeRequest; do
    grpcurl -plaintext "$A" describe "$message" >/dev/null || fail "describe $message"
done

log "reading an INVALID_ARGUMENT's details"
if answer=$(grpcurl -plaintext -d '{"email": "not an address", "username": "bob", "password": "correct horse battery"}' \
    "$A" auth.v1.AuthService/Register 2>&1); then
    fail "Register with a bad email succeeded: $answer"
fi
grep -q 'Code: InvalidArgument' <<<"$answer" || fail "not INVALID_ARGUMENT: $answer"
grep -qE '"@type": ?"type.googleapis.com/google.rpc.BadRequest"' <<<"$answer" || fail "no BadRequest: $answer"
grep -qE '"field": ?"email"' <<<"$answer" || fail "the field is not shown by name: $answer"
if grep -q 'is not recognized' <<<"$answer"; then fail "grpcurl cannot decode the details: $answer"; fi

log "following a password-reset mail's link in a browser"
grpcurl -plaintext -d '{"email": "alice@example.com"}' "$A" auth.v1.AuthService/RequestPasswordReset >/dev/null ||
    fail "RequestPasswordReset"
link=$(python3 "$ROOT/tests/browser/mail_link.py" "$WORK/.data/mail" /reset-password --wait 15) ||
    fail "no reset mail in .data/mail"
# run.sh serves HTTP on 127.0.0.1:8080, the default AUTHD_PUBLIC_URL; this run's port stands in.
[[ $link == http://127.0.0.1:8080/reset-password?token=* ]] ||
    fail "the link is not under the default AUTHD_PUBLIC_URL: $link"
link=${link//127.0.0.1:8080/127.0.0.1:$HTTP_PORT}
steps='[{"open": "'"$link"'"},
 {"fill": {"new_password": "a walk along the canal", "confirm_password": "a walk along the canal"}},
 {"click": "button[type=submit]"}]'
shown=$(PYTHONPATH="$AUTHD_BROWSER_PYTHONPATH" python3 "$ROOT/tests/browser/drive.py" <<<"$steps") ||
    fail "the browser could not follow the link"
grep -q 'Your password is changed' <<<"$shown" || fail "the reset page did not reset: $shown"
grpcurl -plaintext -d '{"identifier": "alice", "password": "a walk along the canal"}' "$A" auth.v1.AuthService/Login |
    grep -q accessToken || fail "the new password does not log in"

log "ok: the README walkthrough, $(wc -w <<<"$services") services described, error details readable, a mailed link works in a browser"
