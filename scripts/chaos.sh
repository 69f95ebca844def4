#!/usr/bin/env bash
# Faults under load, then the invariants over every answer (crates/authd-chaos).
#
#   sudo ./scripts/chaos.sh [SECONDS]     (default 120; CI runs 30)
#   sudo ./scripts/chaos.sh --broken NAME [SECONDS]
#
# --broken runs a build of HEAD with tests/chaos/broken/NAME.patch applied (a deliberate defect,
# built in a git worktree with its own target directory), and succeeds only if the checker
# catches it: the invariant the patch names on its "Invariant:" line must be violated.
#
# Three authd replicas (the third in a network namespace of its own) on a Postgres primary with a
# synchronous streaming standby and a Redis primary with a replica and three sentinels, all
# private instances on a veth link of this machine (10.213.0.0/24, nothing leaves it). During the
# load: a partition of replica 3 from Redis, SIGKILL of replica 1 and its restart, the Redis
# primary killed (Sentinel fails over), the SMTP server down for a while, and the Postgres primary
# crashed with its standby promoted. It prints the invariant table and exits non-zero on any
# violation. Needs root (ip netns, iptables); installs what is missing. Interrupted or killed, it
# stops every server it started and removes the namespace.
#
# Knobs: AUTHD_CHAOS_DIR=DIR keeps the servers' logs and answers.jsonl in a new run.* directory
# under DIR (else in a temp dir, removed on success); AUTHD_CHAOS_CLIENTS=N virtual clients (default 6).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"

BROKEN=""
if [[ ${1:-} == --broken ]]; then
    BROKEN=${2:?"--broken needs the name of a patch in tests/chaos/broken"}
    [[ -f $ROOT/tests/chaos/broken/$BROKEN.patch ]] || {
        echo "chaos.sh: no tests/chaos/broken/$BROKEN.patch" >&2
        exit 2
    }
    EXPECT=$(sed -n 's/^Invariant: *//p' "$ROOT/tests/chaos/broken/$BROKEN.patch" | head -n 1)
    [[ -n $EXPECT ]] || {
        echo "chaos.sh: $BROKEN.patch names no invariant (an \"Invariant: ID\" line)" >&2
        exit 2
    }
    shift 2
fi
SECONDS_OF_LOAD=${1:-120}
[[ $SECONDS_OF_LOAD =~ ^[0-9]+$ && $SECONDS_OF_LOAD -ge 20 ]] || {
    echo "chaos.sh: the duration is a number of seconds, at least 20" >&2
    exit 2
}
[[ $(id -u) -eq 0 ]] || {
    echo "chaos.sh: needs root (a network namespace and iptables for the partition)" >&2
    exit 2
}

# One run at a time: the namespace and its link have fixed names.
exec 9>/run/authd-chaos.lock
flock -n 9 || {
    echo "chaos.sh: another chaos run is going (/run/authd-chaos.lock)" >&2
    exit 2
}

ensure_packages
missing=()
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ((${#missing[@]} > 0)); then
    echo "chaos.sh: installing ${missing[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

cd "$ROOT"
cargo build --locked -q --bin authd -p authd --bin authd-chaos -p authd-chaos
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CHAOS=$TARGET_DIR/debug/authd-chaos
AUTHD=$TARGET_DIR/debug/authd
if [[ -n $BROKEN ]]; then
    TREE=$TARGET_DIR/chaos-broken/tree
    git worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"
    git worktree prune
    git worktree add -q --detach "$TREE" HEAD
    git -C "$TREE" apply "$ROOT/tests/chaos/broken/$BROKEN.patch"
    echo "chaos.sh: building HEAD with $BROKEN.patch (in $TREE)" >&2
    (cd "$TREE" && CARGO_TARGET_DIR=$TARGET_DIR/chaos-broken/target cargo build --locked -q --bin authd -p authd)
    AUTHD=$TARGET_DIR/chaos-broken/target/debug/authd
fi

KEEP=${AUTHD_CHAOS_DIR:-}
if [[ -n $KEEP ]]; then
    mkdir -p "$KEEP"
    WORK=$(mktemp -d "$(cd "$KEEP" && pwd)/run.XXXXXX")
else
    WORK=$(mktemp -d -t authd-chaos.XXXXXXXX)
fi
chmod 755 "$WORK" # the postgres user must traverse it

# authd-chaos stops what it started when it ends or gets SIGINT/SIGTERM; this is for when it
# could not (killed itself, or hung): its session (the replicas, Redis, the sentinels), the
# Postgres servers (pg_ctl starts them in a session of their own), the namespace, the worktree.
CHAOS_PID=""
CHAOS_ENDED=""
cleanup() {
    if [[ -n $CHAOS_PID ]]; then
        if [[ -z $CHAOS_ENDED ]] && kill -0 "$CHAOS_PID" 2>/dev/null; then
            kill -TERM "$CHAOS_PID" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$CHAOS_PID" 2>/dev/null || break
                sleep 0.2
            done
        fi
        # Whatever is left of its session (all of it, if authd-chaos was SIGKILLed). The kernel
        # does not reuse the number of a session that still has members.
        pkill -KILL -s "$CHAOS_PID" 2>/dev/null || true
    fi
    for data in "$WORK"/pg-primary "$WORK"/pg-standby; do
        if [[ -f $data/postmaster.pid ]]; then
            runuser -u postgres -- "$AUTHD_PG_BIN/pg_ctl" stop -m immediate -D "$data" >/dev/null 2>&1 || true
        fi
    done
    ip link del authd-chaos0 2>/dev/null || true
    ip netns del authd-chaos 2>/dev/null || true
    if [[ -n $BROKEN ]]; then
        git -C "$ROOT" worktree remove --force "$TREE" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "chaos.sh: interrupted; the logs are in $WORK" >&2; exit 130' INT
trap 'echo "chaos.sh: stopped; the logs are in $WORK" >&2; exit 143' TERM

expect=()
[[ -n $BROKEN ]] && expect=(--expect "$EXPECT")
# A session of its own, so that the cleanup can find everything it started. (setsid does not
# fork here: job control is off, so the background process is no group leader, and $! is
# authd-chaos itself.)
setsid "$CHAOS" run --duration "$SECONDS_OF_LOAD" \
    --authd "$AUTHD" --pg-bin "$AUTHD_PG_BIN" --work "$WORK" \
    --clients "${AUTHD_CHAOS_CLIENTS:-6}" "${expect[@]}" 9>&- &
CHAOS_PID=$!
rc=0
wait "$CHAOS_PID" || rc=$?
CHAOS_ENDED=1
if [[ -n $BROKEN ]]; then
    if [[ $rc -eq 0 ]]; then
        echo "chaos.sh: the checker caught the defect of $BROKEN.patch: \`$EXPECT\` was violated (logs in $WORK)"
        exit 0
    fi
    echo "chaos.sh: the build with $BROKEN.patch was not caught (exit $rc; logs in $WORK)" >&2
    exit 1
fi
if [[ $rc -ne 0 ]]; then
    echo "chaos.sh: failed; the logs are in $WORK" >&2
    tail -n 5 "$WORK"/authd-*.log >&2 || true
elif [[ -z $KEEP ]]; then
    rm -rf "$WORK"
fi
exit "$rc"
