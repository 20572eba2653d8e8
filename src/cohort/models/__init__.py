"""Models: finding and loading them (:mod:`.loading`), prompts as the model sees them (:mod:`.prompts`),
scoring completions token by token (:mod:`.scoring`), LoRA adapters (:mod:`.lora`) and PPO's value
model (:mod:`.value`).

The names below are imported on first use (PEP 562), so that importing one submodule does not load
the others: transformers costs about a second that config checks and ``cohort methods`` do not need.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "loading": ("ModelNotFoundError", "autocast_context", "eos_token_ids", "load_policy", "load_reference", "load_tokenizer",
                "resolve_device", "resolve_dtype", "resolve_model_source"),
    "prompts": ("Prompt", "PromptRenderer", "encode_prompts", "render_prompt"),
    "scoring": ("completion_logprobs", "completion_logprobs_and_entropy", "prefill_prompts", "shared_prompts"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, "quiet_transformers"])


def quiet_transformers() -> None:
    """No Hugging Face progress bars or notices (weight loading, shard writing): they would break the
    console's own output. Call it just before the first model loads (importing transformers costs ~1 s)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'cohort.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cohort.models.{_WHERE[name]}"), name)
