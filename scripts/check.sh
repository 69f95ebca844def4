#!/usr/bin/env bash
# The static guard rails, each installed on first use into .tools/ (see lib/tools.sh).
#
#   ./scripts/check.sh [buf|deny|manifests]...     all three when none is named
#
#   buf        buf lint (STANDARD, buf.yaml) and buf breaking against a base commit:
#              AUTHD_BUF_AGAINST when set (any buf input, e.g. '.git#ref=main,subdir=proto'),
#              else HEAD when proto/ has uncommitted changes, else HEAD's parent (so CI, on a
#              clean clone, checks the last commit's change)
#   deny       cargo deny check (deny.toml): advisories from the RustSec snapshot in
#              ../shared/advisory-db (offline), licences, duplicate versions, sources
#   manifests  kubernetes-validate over deploy/kubernetes (every manifest but kustomization.yaml)
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

steps=("$@")
((${#steps[@]} > 0)) || steps=(buf deny manifests)
for step in "${steps[@]}"; do
    case $step in
    buf) check_buf ;;
    deny) check_deny ;;
    manifests) check_manifests ;;
    *)
        log "unknown check: $step (buf, deny, manifests)"
        exit 2
        ;;
    esac
done
log "ok: ${steps[*]}"
