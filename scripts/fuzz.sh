#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while, from its seed corpus.
#
#   ./scripts/fuzz.sh [seconds per target] [target...]     default 30 s, every target
#
# Needs the nightly toolchain (installed on these machines) and cargo-fuzz (installed on first
# use). Targets are built without a sanitizer: authd forbids unsafe code, and ASan would
# rebuild every dependency for little gain. The build directory is kept outside the checkout
# (AUTHD_FUZZ_TARGET_DIR, default ~/.cache/authd/fuzz-target), so later runs rebuild little.
# A crash leaves its input under fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"

seconds=${1:-30}
shift || true
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: $0 [seconds] [target...]" >&2; exit 2; }

rustup toolchain list | grep -q '^nightly' || {
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
}
ensure_cargo_tool cargo-fuzz
export CARGO_TARGET_DIR=${AUTHD_FUZZ_TARGET_DIR:-$HOME/.cache/authd/fuzz-target}
cd "$ROOT/fuzz"

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "[fuzz] building ${#targets[@]} targets" >&2
cargo +nightly fuzz build --sanitizer none >&2
for target in "${targets[@]}"; do
    corpus="$ROOT/fuzz/corpus/$target"
    mkdir -p "$corpus"
    echo "[fuzz] $target for ${seconds}s" >&2
    log=$(mktemp -t "authd-fuzz-$target.XXXXXX")
    rc=0
    cargo +nightly fuzz run --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E '^(Done|stat::number_of_executed_units)' "$log" >&2 || true
    if ((rc != 0)); then
        tail -n 60 "$log" >&2
        echo "[fuzz] $target failed (exit $rc); the input is under fuzz/artifacts/$target/" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
echo "[fuzz] ok: ${targets[*]}" >&2
