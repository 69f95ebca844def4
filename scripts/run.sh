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

# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source-path=SCRIPTDIR source=lib/local.sh
source "$ROOT/scripts/lib/local.sh"

if [[ ${1:-} == stop ]]; then
    local_stack_stop
    exit 0
fi

# Resolve a relative CARGO_TARGET_DIR against the caller's cwd before we cd.
if [[ -n ${CARGO_TARGET_DIR:-} && $CARGO_TARGET_DIR != /* ]]; then
    CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
    export CARGO_TARGET_DIR
fi
cd "$ROOT"

local_stack authd
echo "bootstrap admin $AUTHD_BOOTSTRAP_ADMIN_EMAIL: password is in $AUTHD_BOOTSTRAP_ADMIN_PASSWORD_FILE" >&2

# Build, then exec the binary directly ($CARGO is honoured, as cargo itself does).
"${CARGO:-cargo}" build --release --bin authd
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/authd" serve "$@"
