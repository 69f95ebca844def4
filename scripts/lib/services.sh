#!/usr/bin/env bash
# Helpers for running private, throwaway PostgreSQL and Redis instances.
# Source this file; it is not meant to be executed directly.
#
#   ensure_packages                      install postgres/redis/nginx if missing, set AUTHD_PG_BIN
#   start_postgres DATADIR PORT [NAME=VALUE...]
#   stop_postgres DATADIR
#   start_redis DIR PORT
#   stop_redis DIR PORT
#   free_port                            print a free TCP port on 127.0.0.1
set -euo pipefail

# Postgres server binary directory (may be preset by the caller).
AUTHD_PG_BIN=${AUTHD_PG_BIN:-}
_AUTHD_APT_UPDATED=${_AUTHD_APT_UPDATED:-0}

_svc_log() { printf '[services] %s\n' "$*" >&2; }
# Exit (not return) so failures abort even where errexit is suspended.
_svc_die() {
    printf '[services] error: %s\n' "$*" >&2
    exit 1
}
_svc_is_root() { [[ $(id -u) -eq 0 ]]; }

# Absolute path without trailing slash (the path need not exist).
_svc_abs() {
    local p=$1
    [[ $p == /* ]] || p="$PWD/$p"
    [[ $p == / ]] || p=${p%/}
    printf '%s\n' "$p"
}

# Run a command as root (directly, or through sudo).
_svc_as_root() {
    if _svc_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        _svc_die "need root to run '$*' (not root and sudo is not installed)"
    fi
}

# Print the postgres bin dir: prefer 15, else the highest installed version.
_svc_find_pg_bin() {
    local d best=""
    if [[ -x /usr/lib/postgresql/15/bin/pg_ctl && -x /usr/lib/postgresql/15/bin/initdb ]]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
        return 0
    fi
    while IFS= read -r d; do
        [[ -x $d/pg_ctl && -x $d/initdb ]] && best=$d
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
    [[ -n $best ]] || return 1
    printf '%s\n' "$best"
}

_svc_pg_bin() {
    if [[ -z $AUTHD_PG_BIN ]]; then
        AUTHD_PG_BIN=$(_svc_find_pg_bin) ||
            _svc_die "no PostgreSQL server binaries under /usr/lib/postgresql (run ensure_packages)"
    fi
}

ensure_packages() {
    local -a missing=()
    AUTHD_PG_BIN=${AUTHD_PG_BIN:-$(_svc_find_pg_bin || true)}
    [[ -n $AUTHD_PG_BIN && -x $AUTHD_PG_BIN/psql ]] || missing+=(postgresql)
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        missing+=(redis-server)
    fi
    # nginx, for the gateway tests (auth_request in front of authd).
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
    if ((${#missing[@]} > 0)); then
        command -v apt-get >/dev/null 2>&1 ||
            _svc_die "missing ${missing[*]} and apt-get is not available; install them manually"
        _svc_log "installing: ${missing[*]}"
        if [[ $_AUTHD_APT_UPDATED != 1 ]]; then
            _svc_as_root apt-get update -q
            _AUTHD_APT_UPDATED=1
        fi
        _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
        AUTHD_PG_BIN=$(_svc_find_pg_bin) || _svc_die "postgresql installed but no server binaries found"
        command -v redis-server >/dev/null 2>&1 || _svc_die "redis-server still not found after install"
    fi
    command -v python3 >/dev/null 2>&1 || _svc_log "warning: python3 not found; free_port uses a fallback"
}

# Run a postgres tool as the right user: 'postgres' when root, else ourselves.
# cd / so the postgres user never needs access to the caller's cwd.
_svc_pg_run() {
    if _svc_is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# When root, make sure the postgres user can reach and write DIR.
_svc_pg_check_access() {
    local dir=$1 d
    _svc_is_root || return 0
    if ! _svc_pg_run test -w "$dir" -a -x "$dir"; then
        d=$dir
        while [[ $d != / ]]; do
            d=$(dirname "$d")
            _svc_pg_run test -x "$d" ||
                _svc_die "user postgres cannot traverse $d (chmod o+x it, or use another directory)"
        done
        _svc_die "user postgres cannot write $dir"
    fi
}

# Quote one word for /bin/sh (pg_ctl -o goes through a shell).
_svc_sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

_svc_pg_ready() {
    "$AUTHD_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -t 1
}

start_postgres() {
    (($# >= 2)) || _svc_die "usage: start_postgres DATADIR PORT [NAME=VALUE...]"
    local datadir port logfile sockdir opts arg out i
    datadir=$(_svc_abs "$1")
    port=$2
    shift 2
    logfile="$datadir.log"
    _svc_pg_bin

    if _svc_is_root; then
        id -u postgres >/dev/null 2>&1 || _svc_die "running as root but there is no 'postgres' user"
    fi

    # Already running (e.g. run.sh invoked twice): reuse it.
    if [[ -f $datadir/PG_VERSION ]] &&
        _svc_pg_run "$AUTHD_PG_BIN/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
        _svc_pg_ready "$port" ||
            _svc_die "postgres in $datadir is running but not accepting connections on 127.0.0.1:$port"
        _svc_log "postgres already running ($datadir, port $port)"
        return 0
    fi

    # Create the data dir, owned by the right user.
    mkdir -p "$datadir"
    if [[ ! -f $datadir/PG_VERSION ]]; then
        if _svc_is_root; then chown postgres:postgres "$datadir"; fi
        chmod 700 "$datadir"
    fi
    _svc_pg_check_access "$datadir"

    if [[ ! -f $datadir/PG_VERSION ]]; then
        _svc_log "initdb $datadir"
        if ! out=$(_svc_pg_run "$AUTHD_PG_BIN/initdb" -D "$datadir" --auth=trust -U postgres \
            --encoding=UTF8 --locale=C.UTF-8 2>&1); then
            _svc_log "initdb with locale C.UTF-8 failed; retrying with locale C"
            out=$(_svc_pg_run "$AUTHD_PG_BIN/initdb" -D "$datadir" --auth=trust -U postgres \
                --encoding=UTF8 --locale=C 2>&1) || {
                printf '%s\n' "$out" >&2
                _svc_die "initdb failed for $datadir"
            }
        fi
    fi

    # Unix socket lives in the data dir (sun_path is ~107 bytes; else TCP only).
    sockdir=$datadir
    if ((${#sockdir} + 16 > 100)); then sockdir=""; fi

    opts="-c listen_addresses=127.0.0.1 -c port=$port"
    opts+=" -c unix_socket_directories=$(_svc_sh_quote "$sockdir")"
    opts+=" -c shared_preload_libraries=pg_stat_statements -c max_connections=300"
    for arg in "$@"; do
        [[ $arg == -c ]] && continue # tolerate "-c NAME=VALUE" pairs
        opts+=" -c $(_svc_sh_quote "$arg")"
    done

    # Log file beside the data dir; it must be writable by the server user.
    : >>"$logfile"
    if _svc_is_root; then chown postgres:postgres "$logfile"; fi

    _svc_log "starting postgres on 127.0.0.1:$port (log: $logfile)"
    if ! _svc_pg_run "$AUTHD_PG_BIN/pg_ctl" start -D "$datadir" -l "$logfile" -w -t 60 \
        -o "$opts" >/dev/null; then
        tail -n 20 "$logfile" >&2 || true
        _svc_die "postgres failed to start (see $logfile)"
    fi
    for ((i = 0; i < 60; i++)); do
        _svc_pg_ready "$port" && return 0
        sleep 0.5
    done
    tail -n 20 "$logfile" >&2 || true
    _svc_die "postgres on port $port did not become ready"
}

stop_postgres() {
    (($# >= 1)) || _svc_die "usage: stop_postgres DATADIR"
    local datadir pid
    datadir=$(_svc_abs "$1")
    [[ -f $datadir/PG_VERSION ]] || return 0
    _svc_pg_bin
    if _svc_pg_run "$AUTHD_PG_BIN/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
        _svc_log "stopping postgres ($datadir)"
        pid=$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)
        _svc_pg_run "$AUTHD_PG_BIN/pg_ctl" stop -D "$datadir" -m fast -w -t 60 >/dev/null || true
        # pg_ctl returns once postmaster.pid is gone; wait for the process too.
        if [[ $pid =~ ^[0-9]+$ ]]; then
            _svc_wait_gone "$pid" 50 || _svc_log "warning: postgres pid $pid still running"
        fi
    fi
    return 0
}

# Wait up to N tenths of a second for PID to exit (zombies count as gone).
_svc_wait_gone() {
    local pid=$1 n=$2 i state
    for ((i = 0; i < n; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
        [[ $state == Z ]] && return 0
        sleep 0.1
    done
    return 1
}

_svc_redis_ping() {
    [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true) == PONG ]]
}

# Print the pid from DIR/redis.pid if that process is alive and is redis.
_svc_redis_pid() {
    local pidfile="$1/redis.pid" pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis || return 1
    fi
    printf '%s\n' "$pid"
}

start_redis() {
    (($# == 2)) || _svc_die "usage: start_redis DIR PORT"
    local dir port i
    dir=$(_svc_abs "$1")
    port=$2
    command -v redis-server >/dev/null 2>&1 || _svc_die "redis-server not installed (run ensure_packages)"
    mkdir -p "$dir"

    if _svc_redis_pid "$dir" >/dev/null; then
        _svc_redis_ping "$port" ||
            _svc_die "redis from $dir is running but not answering on 127.0.0.1:$port"
        _svc_log "redis already running ($dir, port $port)"
        return 0
    fi
    _svc_redis_ping "$port" && _svc_die "port $port is already used by another redis"
    rm -f "$dir/redis.pid"

    _svc_log "starting redis on 127.0.0.1:$port (log: $dir/redis.log)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
        --save "" --appendonly no --dir "$dir" \
        --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
    for ((i = 0; i < 100; i++)); do
        _svc_redis_ping "$port" && return 0
        sleep 0.1
    done
    tail -n 20 "$dir/redis.log" >&2 || true
    _svc_die "redis on port $port did not answer PING"
}

stop_redis() {
    (($# == 2)) || _svc_die "usage: stop_redis DIR PORT"
    local dir port pid
    dir=$(_svc_abs "$1")
    port=$2
    pid=$(_svc_redis_pid "$dir") || return 0 # not running (or not ours)
    _svc_log "stopping redis ($dir)"
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    if ! _svc_wait_gone "$pid" 30; then
        kill -TERM "$pid" 2>/dev/null || true
        _svc_wait_gone "$pid" 30 || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/redis.pid"
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
        return
    fi
    # Fallback: random high port that nothing answers on.
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    _svc_die "could not find a free port"
}
