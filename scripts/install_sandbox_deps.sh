#!/usr/bin/env bash
# Install the system packages the code-execution sandbox (cohort.rewards.sandbox) uses:
#   bubblewrap   the isolation layer (user/pid/net/ipc/uts/mount namespaces)
#   libseccomp2  lets bubblewrap forbid fork when it must run the sandbox as host uid 0
#   util-linux   unshare/setpriv, the weaker layer a user may name explicitly (isolation: unshare)
# Idempotent: installs only what is missing. Never fails: without bubblewrap the code reward refuses
# to run untrusted code (a clear error naming this package) and the sandbox tests skip with that
# reason; this script only reports what it could not do.
# --quiet: print nothing when everything is present (make setup).
set -u

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
    missing+=(libseccomp2)
fi
{ command -v unshare >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1; } || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
    [ "${1:-}" = --quiet ] || echo "sandbox deps: all present ($(bwrap --version 2>/dev/null))"
    exit 0
fi
# Not root: use sudo only where it needs no password (a script must never stop at a prompt).
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "sandbox deps: missing ${missing[*]}; not root, so not installing (install: sudo apt-get install ${missing[*]}, or sudo make system-deps)" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "sandbox deps: missing ${missing[*]}; apt-get is not available, install them with the system's package manager" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    # The package lists may be missing or stale (fresh container): refresh them once and retry.
    "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        echo "sandbox deps: could not install ${missing[*]} with apt-get; the code reward will refuse to run until bubblewrap is installed" >&2
        exit 0
    fi
fi
echo "sandbox deps: installed ${missing[*]}"
exit 0
