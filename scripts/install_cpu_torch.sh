#!/usr/bin/env bash
# Install PyTorch's CPU build into a virtualenv before anything else, so that nothing later pulls
# the CUDA build from PyPI (on Linux, PyPI's torch brings about 3 GB of nvidia-* packages).
#
#   scripts/install_cpu_torch.sh VENV_PYTHON SPEC [PIP_ARGS...]
#     SPEC: a pin such as torch==2.13.0 (make setup: the one in constraints.txt), or torch for the
#           newest (make test-latest)
#     PIP_ARGS: for installing torch's own dependencies, e.g. -c constraints.txt
#
# Does nothing where CUDA is present (nvidia-smi: pip's default torch is the right one there) or
# where the virtualenv already has a CPU torch that satisfies SPEC. Sources, in order:
#   pinned: a local wheel (pip's find-links, e.g. PIP_FIND_LINKS), else PyTorch's CPU index;
#   newest: PyTorch's CPU index, else the newest local wheel.
# A source counts only if what it installed is a CPU build (no nvidia-*/cuda-* requirements): pip's
# configured extra indexes can serve a CUDA wheel even next to --index-url. Fails (exit 1) rather
# than leave a CUDA build behind.
set -euo pipefail

python=$1
spec=$2
shift 2
cpu_index=https://download.pytorch.org/whl/cpu
attempt=("$python" -m pip install --quiet --no-deps --force-reinstall)

# Exit 0 when the venv's torch satisfies SPEC and is a CPU build.
has_cpu_torch() {
    "$python" - "$spec" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import requires, version
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare virtualenv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
cuda = any(r.lower().startswith(("nvidia-", "cuda-")) for r in requires("torch") or [])
sys.exit(0 if Requirement(sys.argv[1]).specifier.contains(version("torch"), prereleases=True) and not cuda else 1)
EOF
}
from_local() { "${attempt[@]}" --no-index "$spec" 2>/dev/null && has_cpu_torch; }
from_cpu_index() { "${attempt[@]}" --timeout 30 --retries 1 --index-url "$cpu_index" "$spec" 2>/dev/null && has_cpu_torch; }

if command -v nvidia-smi >/dev/null 2>&1 || has_cpu_torch; then
    exit 0
fi
echo "setup: no CUDA here, installing the CPU build of $spec"
if [ "$spec" = torch ]; then
    from_cpu_index || from_local
else
    from_local || from_cpu_index
fi || {
    "$python" -m pip uninstall --quiet --yes torch 2>/dev/null || true
    echo "setup: could not install a CPU build of $spec (no local wheel, and $cpu_index unreachable)" >&2
    exit 1
}
# torch's own dependencies (sympy, networkx, ...), from the ordinary index
"$python" -m pip install --quiet "$@" "$spec"
