"""Models: finding and loading them (:mod:`.loading`), prompts as the model sees them (:mod:`.prompts`),
scoring completions token by token (:mod:`.scoring`), LoRA adapters (:mod:`.lora`) and PPO's value
model (:mod:`.value`)."""

from cohort.models.loading import (
    ModelNotFoundError,
    autocast_context,
    eos_token_ids,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_source,
)
from cohort.models.prompts import Prompt, PromptRenderer, encode_prompts, render_prompt
from cohort.models.scoring import (
    completion_logprobs,
    completion_logprobs_and_entropy,
    prefill_prompts,
    shared_prompts,
)

__all__ = [
    "ModelNotFoundError",
    "Prompt",
    "PromptRenderer",
    "autocast_context",
    "completion_logprobs",
    "completion_logprobs_and_entropy",
    "encode_prompts",
    "eos_token_ids",
    "load_policy",
    "load_reference",
    "load_tokenizer",
    "prefill_prompts",
    "render_prompt",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_source",
    "shared_prompts",
]
