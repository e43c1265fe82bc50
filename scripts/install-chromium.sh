#!/usr/bin/env bash
# Debian's chromium for the dashboard's headless-browser test (Playwright drives it; Playwright's own browser
# download needs its CDN). Installs it with apt when missing, then prints CHROMIUM=<path> on stdout.
# Usage: scripts/install-chromium.sh        (needs root or sudo the first time)
set -euo pipefail

find_chromium() {
    local name
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if ! path=$(find_chromium); then
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -n)
    else
        echo "install-chromium.sh: chromium is missing and neither root nor sudo is available: apt-get install -y chromium" >&2
        exit 1
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "install-chromium.sh: no apt-get here; install chromium by hand" >&2; exit 1; }
    echo "install-chromium.sh: installing Debian's chromium with apt-get" >&2
    "${as_root[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
    path=$(find_chromium) || { echo "install-chromium.sh: apt-get ran but no chromium is on PATH" >&2; exit 1; }
fi
echo "CHROMIUM=$path"
