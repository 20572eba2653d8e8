# cohort: one-command setup, tests and demo. Needs only python3 (3.10+) and the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_CPU := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench system-deps clean

setup: $(STAMP)

# Re-run only when the dependency declarations change; `make setup` is quick when nothing changed.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@# Without CUDA, install the pinned CPU build first so that nothing pulls the CUDA wheels:
	@# a local wheel (find-links) if the machine has one, else PyTorch's CPU index.
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "setup: no CUDA here, installing the CPU build $(TORCH_CPU)"; \
		$(PIP) install --quiet --no-deps --no-index $(TORCH_CPU) 2>/dev/null \
		|| $(PIP) install --quiet --no-deps $(TORCH_CPU) --index-url https://download.pytorch.org/whl/cpu; \
		$(PIP) install --quiet $(TORCH_CPU); \
	fi
	@# bench: TRL, for benchmarks/vs_trl.py and its smoke test (never imported by cohort itself)
	@$(PIP) install --quiet -e ".[test,bench]"
	@touch $(STAMP)
	@$(PY) -c "import torch, transformers; print('setup: torch', torch.__version__, '| transformers', transformers.__version__)"

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The bundled demo: a small model learns arithmetic with GRPO; held-out accuracy before and after.
demo: setup
	$(VENV)/bin/cohort train

# cohort vs TRL's GRPOTrainer, side by side (benchmarks/RESULTS.md); e.g. make bench BENCH_ARGS="--model-size small"
bench: setup
	$(PY) benchmarks/vs_trl.py $(BENCH_ARGS)

# Debian packages some tests use: bubblewrap (code sandbox) and chromium (report test). Idempotent.
system-deps:
	bash scripts/install_sandbox_deps.sh
	bash scripts/install_chromium.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
