"""Rollout engines: what turns prompts into a Rollout (``rollout.engine``).

``native``: cohort's own decode loop (:mod:`cohort.rollout.engine`) runs the policy module itself,
so its sampling log-probs are the policy's (pi_old at mu = 1). ``vllm``: vLLM in this process
(:mod:`cohort.rollout.vllm_engine`), its weights copied from the policy whenever they changed;
the trainer recomputes pi_old and records the log-prob mismatch. Both take the same arguments and
the same :class:`~cohort.rollout.sampling.SamplingParams`, so every caller (the online sources,
offline sampling, Monte-Carlo step labels, held-out evaluation) works with either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from cohort.config.schema import ROLLOUT_ENGINES
from cohort.rollout.batch import Rollout
from cohort.rollout.sampling import SamplingParams


class RolloutEngine(Protocol):
    """Samples ``group_size`` completions per prompt from ``model``'s current weights."""

    name: str

    def generate(self, model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], group_size: int,
                 params: SamplingParams, *, pad_token_id: int, generator: torch.Generator, tokenizer: Any = None,
                 shard: tuple[int, int] | None = None) -> Rollout: ...

    def follow(self, model: torch.nn.Module) -> bool:
        """Take ``model``'s current weights if they changed (generate does it too); True if it copied.
        Every rank calls it together before rank 0 alone generates (held-out evaluation)."""

    def sleep(self) -> None:
        """Free the engine's memory for the update (the trainer calls it after the rollout)."""


class NativeEngine:
    """cohort's decode loop on the policy itself (:func:`cohort.rollout.engine.generate_rollout`)."""

    name = "native"

    def generate(self, model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], group_size: int,
                 params: SamplingParams, **options: Any) -> Rollout:
        from cohort.rollout.engine import (
            generate_rollout,  # needs transformers' cache classes: loaded on first use
        )

        return generate_rollout(model, prompt_ids, group_size, params, **options)

    def follow(self, model: torch.nn.Module) -> bool:
        """Nothing to copy: the policy is the engine."""
        return False

    def sleep(self) -> None:
        """Nothing to free: the policy is the engine."""


NATIVE = NativeEngine()


def build_engine(rollout: Any, model_path: str | Path, *, dtype: torch.dtype, device: torch.device,
                 trust_remote_code: bool = False) -> RolloutEngine:
    """The engine a run's ``rollout`` section (a :class:`cohort.config.RolloutConfig`) asks for.

    vLLM starts from ``model_path`` (the architecture, tokenizer and first weights); the process keeps
    one engine, so a second run on the same model reuses it (vLLM's start-up takes seconds).
    """
    if rollout.engine == "native":
        return NATIVE
    if rollout.engine != "vllm":
        raise ValueError(f"rollout.engine={rollout.engine!r} is not allowed: expected one of {', '.join(ROLLOUT_ENGINES)}")
    from cohort.rollout.vllm_engine import VllmEngine

    return VllmEngine.shared(engine_source(model_path), dtype=dtype, device=device, memory_fraction=rollout.vllm_memory_fraction,
                             sleep=rollout.vllm_sleep, trust_remote_code=trust_remote_code)


def check_engine(rollout: Any, model_path: str | Path, device: torch.device, trust_remote_code: bool = False) -> None:
    """Before anything loads: ``rollout.engine=vllm`` needs vLLM installed and a model shape it runs."""
    if rollout.engine != "vllm":
        return
    from cohort.config import ConfigError
    from cohort.rollout.vllm_engine import INSTALL_HINT, check_head_size, vllm_available

    if not vllm_available():
        raise ConfigError(f"rollout.engine=vllm: {INSTALL_HINT}")
    check_head_size(engine_source(model_path), device, trust_remote_code)


def engine_source(model_path: str | Path) -> str:
    """The directory an engine starts from: a LoRA adapter directory's base model (the engine serves
    the merged weights, copied from the policy), else the model directory itself."""
    from cohort.models.lora import base_model_path

    return str(base_model_path(model_path) or model_path) if Path(model_path).is_dir() else str(model_path)
