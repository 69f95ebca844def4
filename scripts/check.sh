#!/usr/bin/env bash
# The static guard rails, each installed on first use into .tools/ (see lib/tools.sh).
#
#   ./scripts/check.sh [buf|deny|manifests|client]...     all four when none is named
#
#   buf        buf lint (STANDARD, buf.yaml) and buf breaking against a base commit:
#              AUTHD_BUF_AGAINST when set (any buf input, e.g. '.git#ref=main,subdir=proto'),
#              else HEAD when proto/ has uncommitted changes, else HEAD's parent (so CI, on a
#              clean clone, checks the last commit's change)
#   deny       cargo deny check (deny.toml): advisories from the RustSec snapshot in
#              ../shared/advisory-db (offline), licences, duplicate versions, sources
#   manifests  kubernetes-validate over deploy/kubernetes (every manifest but kustomization.yaml)
#   client     authd-client stays a library others can take: none of the server's heavy crates in
#              its dependency tree, and its documentation builds without a warning
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"
cd "$ROOT"

log() { printf '[check] %s\n' "$*" >&2; }

check_buf() {
    ensure_buf
    log "buf lint"
    buf lint
    local against=${AUTHD_BUF_AGAINST:-}
    if [[ -z $against ]]; then
        if ! git diff --quiet HEAD -- proto || [[ -n $(git ls-files --others --exclude-standard proto) ]]; then
            against='.git#ref=HEAD,subdir=proto'
        elif git rev-parse --verify --quiet HEAD~1 >/dev/null; then
            against='.git#ref=HEAD~1,subdir=proto'
        else
            log "buf breaking: no earlier commit to compare with"
            return 0
        fi
    fi
    log "buf breaking against $against"
    buf breaking proto --against "$against"
}

check_deny() {
    ensure_cargo_tool cargo-deny
    local snapshot="$ROOT/../shared/advisory-db"
    [[ -d $snapshot ]] || { log "no advisory snapshot at $snapshot"; return 1; }
    local tmp
    tmp=$(mktemp -d -t authd-deny.XXXXXXXX)
    # cargo-deny wants the database as a git repository, in the folder it derives from its URL.
    local db="$tmp/advisory-db-3157b0e258782691"
    cp -r "$snapshot" "$db"
    chmod -R u+w "$db"
    git -C "$db" init -q
    git -C "$db" add -A
    git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost commit -qm snapshot
    cargo metadata --format-version 1 --locked >"$tmp/metadata.json"
    awk -v root="$tmp" '
        { print }
        /^\[advisories\]$/ {
            print "db-path = \"" root "\""
            print "db-urls = [\"https://github.com/rustsec/advisory-db\"]"
        }
    ' deny.toml >"$tmp/deny.toml"
    log "cargo deny check (advisories as of $(cut -c1-60 "$snapshot/SNAPSHOT"))"
    local rc=0
    cargo deny --offline --metadata-path "$tmp/metadata.json" --config "$tmp/deny.toml" \
        check --hide-inclusion-graph advisories licenses bans sources || rc=$?
    rm -rf "$tmp"
    return "$rc"
}

check_manifests() {
    ensure_kubernetes_validate
    local files=()
    for file in deploy/kubernetes/*.yaml; do
        [[ $(basename "$file") == kustomization.yaml ]] && continue
        files+=("$file")
    done
    log "kubernetes-validate ${files[*]}"
    kubernetes_validate --strict "${files[@]}"
    # kustomization.yaml is no Kubernetes resource: check that what it lists exists.
    local listed missing=0
    while read -r listed; do
        [[ -f deploy/kubernetes/$listed ]] || { log "kustomization.yaml lists a missing $listed"; missing=1; }
    done < <(awk '/^resources:/ { on = 1; next } /^[^ -]/ { on = 0 } on && /^ *- / { print $2 }' \
        deploy/kubernetes/kustomization.yaml)
    return "$missing"
}

check_client() {
    log "cargo tree -p authd-client: no database, Redis, mail, hashing or HTTP server"
    local tree banned
    tree=$(cargo tree -p authd-client -e normal --prefix none --locked)
    banned=$(grep -E '^(diesel|diesel-async|bb8|argon2|lettre|redis|axum|zxcvbn) ' <<<"$tree" | sort -u || true)
    if [[ -n $banned ]]; then
        log "authd-client depends on: $banned"
        return 1
    fi
    log "cargo doc -p authd-client (warnings are errors)"
    RUSTDOCFLAGS="-D warnings" cargo doc -p authd-client --no-deps --locked --quiet
}

steps=("$@")
((${#steps[@]} > 0)) || steps=(buf deny manifests client)
for step in "${steps[@]}"; do
    case $step in
    buf) check_buf ;;
    deny) check_deny ;;
    manifests) check_manifests ;;
    client) check_client ;;
    *)
        log "unknown check: $step (buf, deny, manifests, client)"
        exit 2
        ;;
    esac
done
log "ok: ${steps[*]}"
