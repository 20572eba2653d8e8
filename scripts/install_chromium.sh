#!/usr/bin/env bash
# Install the headless browser the report test (tests/test_report.py) drives:
#   chromium         Debian's Chromium (/usr/bin/chromium)
#   chromium-driver  the matching WebDriver (/usr/bin/chromedriver), version-locked to chromium
# Idempotent: installs only what is missing. Never fails hard: without root or apt-get it says what
# is missing and exits 0, and the browser test then skips with that reason.
# --quiet: print nothing when everything is present (make setup).
set -u

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
    [ "${1:-}" = --quiet ] || echo "chromium: all present ($(chromium --version 2>/dev/null | head -n 1))"
    exit 0
fi
# Not root: use sudo only where it needs no password (a script must never stop at a prompt).
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "chromium: missing ${missing[*]}; not root, so not installing (install: sudo apt-get install ${missing[*]}, or sudo make system-deps)" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: missing ${missing[*]}; apt-get is not available, install them with the system's package manager" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel job, unattended upgrades) may hold the dpkg lock: wait for it.
apt_install() {
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null 2>&1
}
if ! apt_install "${missing[@]}"; then
    # The package lists may be missing or stale (fresh container): refresh them once and retry.
    "${sudo[@]}" apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
    if ! apt_install "${missing[@]}"; then
        echo "chromium: could not install ${missing[*]} with apt-get" >&2
        exit 0
    fi
fi
echo "chromium: installed ${missing[*]} ($(chromium --version 2>/dev/null | head -n 1))"
exit 0
