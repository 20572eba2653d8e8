#!/usr/bin/env bash
# Install the headless browser the report test (tests/test_report.py) drives:
#   chromium         Debian's Chromium (/usr/bin/chromium)
#   chromium-driver  the matching WebDriver (/usr/bin/chromedriver), version-locked to chromium
# Idempotent: installs only what is missing. Never fails hard: without root or apt-get it says what
# is missing and exits 0, and the browser test then skips with that reason.
# --quiet: print nothing when everything is present (make setup).
set -u
# install_missing_apt_packages: the not-root / no-apt-get / apt-get logic shared with install_sandbox_deps.sh.
source "$(dirname "${BASH_SOURCE[0]}")/apt_packages.sh"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

chromium_version() { chromium --version 2>/dev/null | head -n 1; }
install_missing_apt_packages chromium "${1:-}" chromium_version chromium_version "" "${missing[@]}"
exit 0
