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
# install_missing_apt_packages: the not-root / no-apt-get / apt-get logic shared with install_chromium.sh.
source "$(dirname "${BASH_SOURCE[0]}")/apt_packages.sh"

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
    missing+=(libseccomp2)
fi
{ command -v unshare >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1; } || missing+=(util-linux)

bwrap_version() { bwrap --version 2>/dev/null; }
install_missing_apt_packages "sandbox deps" "${1:-}" bwrap_version "" \
    "; the code reward will refuse to run until bubblewrap is installed" "${missing[@]}"
exit 0
