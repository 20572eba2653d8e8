# Sourced (not run) by install_chromium.sh and install_sandbox_deps.sh: the part of "install the
# system packages that are missing" that does not depend on which packages they are. Each script
# works out what is missing itself, then calls install_missing_apt_packages with its own wording.
#
# Never fails: every outcome (all present, not root, no apt-get, apt-get failed, installed) is a
# line on stdout or stderr and a return status of 0, so that `make setup` goes on and the tests that
# need a missing package skip, naming it.

# install_missing_apt_packages LABEL QUIET VERSION INSTALLED_VERSION FAILURE_NOTE [PACKAGE...]
#   LABEL              prefix of every message ("chromium", "sandbox deps")
#   QUIET              the script's first argument: --quiet prints nothing when nothing is missing
#   VERSION            command whose output goes in parentheses after "all present"
#   INSTALLED_VERSION  command whose output goes in parentheses after "installed ...", or "" for none
#   FAILURE_NOTE       appended to the "could not install ... with apt-get" line ("" for nothing)
#   PACKAGE...         the missing Debian packages (none: only the "all present" line)
install_missing_apt_packages() {
    local label=$1 quiet=$2 version=$3 installed_version=$4 failure_note=$5
    shift 5
    local missing=("$@")
    if [ ${#missing[@]} -eq 0 ]; then
        [ "$quiet" = --quiet ] || echo "$label: all present ($($version))"
        return 0
    fi
    # Not root: use sudo only where it needs no password (a script must never stop at a prompt).
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "$label: missing ${missing[*]}; not root, so not installing (install: sudo apt-get install ${missing[*]}, or sudo make system-deps)" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$label: missing ${missing[*]}; apt-get is not available, install them with the system's package manager" >&2
        return 0
    fi
    if ! _apt_get_install "${sudo[@]}" -- "${missing[@]}"; then
        echo "$label: could not install ${missing[*]} with apt-get$failure_note" >&2
        return 0
    fi
    echo "$label: installed ${missing[*]}${installed_version:+ ($($installed_version))}"
    return 0
}

# _apt_get_install [SUDO...] -- PACKAGE...: apt-get install, quietly; on failure refresh the package
# lists once (they may be missing or stale in a fresh container) and try again. Another apt run (a
# parallel job, unattended upgrades) may hold the dpkg lock: wait up to 5 minutes for it.
_apt_get_install() {
    local sudo=()
    while [ "$1" != -- ]; do
        sudo+=("$1")
        shift
    done
    shift
    export DEBIAN_FRONTEND=noninteractive
    local lock=(-o DPkg::Lock::Timeout=300)
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${lock[@]}" "$@" >/dev/null 2>&1 && return 0
    "${sudo[@]}" apt-get update -qq "${lock[@]}" >/dev/null 2>&1 || true
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${lock[@]}" "$@" >/dev/null 2>&1
}
