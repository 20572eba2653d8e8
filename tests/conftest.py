"""Shared fixtures: tiny real HF models and a char-level tokenizer, built locally (no hub).

The model directories are written once per test session; the model fixtures load a fresh copy
for every test, so a test may train or modify its model freely. ``transformers`` is imported
lazily, so test modules that use none of these fixtures do not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Hooks: a test marked requires_bubblewrap / requires_chromium skips (or, under
# COHORT_REQUIRE_SYSTEM_DEPS=1, fails) when the package is missing, and the terminal summary says
# which packages were missing and how to install them.
import system_deps
import xdist_order
from system_deps import pytest_runtest_setup, pytest_terminal_summary  # noqa: F401

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast


def _save(directory: Path, arch: str, seed: int) -> Path:
    from tiny_models import save_tiny_model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return save_tiny_model(directory, arch, seed=seed)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama-style model + char tokenizer (with a chat template). Read-only."""
    return _save(tmp_path_factory.mktemp("tiny-llama"), "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Qwen2-style model + char tokenizer (with a chat template). Read-only."""
    return _save(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", seed=1)


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model_dir(request: pytest.FixtureRequest, tiny_llama_dir: Path, tiny_qwen2_dir: Path) -> Path:
    """Each tiny architecture's directory in turn."""
    return tiny_llama_dir if request.param == "llama" else tiny_qwen2_dir


def _load(directory: Path) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@pytest.fixture
def tiny_llama(tiny_llama_dir: Path) -> PreTrainedModel:
    """A fresh float32 copy of the tiny Llama-style model (eval mode), free to modify."""
    return _load(tiny_llama_dir)


@pytest.fixture
def tiny_qwen2(tiny_qwen2_dir: Path) -> PreTrainedModel:
    """A fresh float32 copy of the tiny Qwen2-style model (eval mode), free to modify."""
    return _load(tiny_qwen2_dir)


@pytest.fixture
def tiny_model(tiny_model_dir: Path) -> PreTrainedModel:
    """A fresh copy of each tiny architecture in turn (parametrised over llama and qwen2)."""
    return _load(tiny_model_dir)


@pytest.fixture
def char_tokenizer() -> PreTrainedTokenizerFast:
    """The char-level tokenizer of the tiny models (pad, BOS, EOS, chat template)."""
    from tiny_models import build_char_tokenizer

    return build_char_tokenizer()


def pytest_configure(config: pytest.Config) -> None:
    """Run torch single-threaded: the test models are tiny, and on a busy 2-core machine OpenMP
    threads waiting for each other made the suite several times slower. COHORT_TEST_THREADS
    overrides the count. (xdist's controller runs no test: it skips importing torch, ~1.5 s before
    any worker starts.)"""
    import os

    distributing = config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))
    if distributing and not hasattr(config, "workerinput"):  # the controller of `pytest -n N`
        return
    import torch

    torch.set_num_threads(int(os.environ.get("COHORT_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip what needs a missing system package (see system_deps), then order the session for
    xdist's work stealing: the long tests first, spread over the workers (see xdist_order)."""
    system_deps.pytest_collection_modifyitems(config, items)
    items[:] = xdist_order.planned(items, xdist_order.workers_in_session())
