"""Score completions token by token: the training forward and the prompt prefill both engines share.

:func:`completion_logprobs` scores right-padded completions after left-padded prompts with exactly
the temperature scaling used by the rollout engine, so that the ratio pi_theta / pi_old is 1 at the
first update when nothing has changed. Rows that share a prompt (the G samples of a group) run that
prompt through the model once, as the rollout engine does; the output head runs chunk by chunk, so
no [n, T, vocab] logits tensor is ever held.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedModel
    from transformers.cache_utils import Cache

from cohort.algo.ops import DEFAULT_CHUNK_ROWS, entropy_from_logits, token_logprobs


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding: 0 at each row's first real token (pads get 0 too).

    attention_mask: [n, L] bool -> [n, L] long
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [n, L]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside the wrappers a run may put around it: DistributedDataParallel (``.module``),
    a PEFT model (its base model, which holds the injected adapters) and the LoRA reference. Its
    config and forward signature are what the helpers below read; calls still go to ``model``."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "policy") and type(model).__name__ == "AdapterReference":
            model = model.policy
        else:
            return model


@functools.lru_cache(maxsize=None)
def _forward_parameters(model_type: type) -> frozenset[str]:
    """The named parameters of a model class's forward (read once per class: signatures are slow)."""
    return frozenset(inspect.signature(model_type.forward).parameters)


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward can compute only the last positions' logits."""
    return "logits_to_keep" in _forward_parameters(type(unwrap(model)))


def cache_kwargs(model: torch.nn.Module, cache: Cache) -> dict[str, Cache]:
    """The forward keyword that passes a KV cache: ``cache`` where the model's forward has it
    (recent transformers; 5.24 deprecates ``past_key_values``), else ``past_key_values`` (older
    releases). Decided once per model class."""
    name = "cache" if "cache" in _forward_parameters(type(unwrap(model))) else "past_key_values"
    return {name: cache}


def prefill_prompts(
    model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Run left-padded prompts once into a fresh KV cache (shared by the rollout engine and the
    training forward). -> (cache with one row per prompt, logits of each prompt's last position [P, V])"""
    from transformers import DynamicCache

    cache = DynamicCache(config=unwrap(model).config)
    logits = model(
        input_ids=prompt_ids,  # [P, Lp]
        attention_mask=prompt_mask,
        position_ids=left_padded_position_ids(prompt_mask),
        use_cache=True,
        **cache_kwargs(model, cache),
        **({"logits_to_keep": 1} if supports_logits_to_keep(model) else {}),
    ).logits[:, -1, :]  # [P, V]
    return cache, logits


def _check_scoring_inputs(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> None:
    for name, ids, mask in (("prompt", prompt_ids, prompt_mask), ("completion", completion_ids, completion_mask)):
        if ids.dim() != 2:
            raise ValueError(f"{name}_ids must be 2-D [n, length], got shape {tuple(ids.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"{name}_mask must be a bool tensor (True = real token), got {mask.dtype}")
        if mask.shape != ids.shape:
            raise ValueError(f"{name}_mask shape {tuple(mask.shape)} differs from {name}_ids shape {tuple(ids.shape)}")
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has {completion_ids.shape[0]}; "
            "expand the prompts to one row per completion first"
        )
    if prompt_ids.shape[1] == 0 or completion_ids.shape[1] == 0:
        raise ValueError(
            "prompts and completions need at least one column, got widths "
            f"{prompt_ids.shape[1]} and {completion_ids.shape[1]}"
        )
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded: the last column of prompt_mask must be True in every row")


def shared_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct prompts among the rows and which one each row has.

    Two rows share a prompt when their real (masked-in) tokens are equal; padding ids are ignored.
    prompt_ids/prompt_mask: [n, Lp] -> (first row holding each distinct prompt [u] long, row -> prompt [n] long)
    """
    keyed = torch.where(prompt_mask, prompt_ids, -1)  # [n, Lp]; token ids are >= 0, so -1 marks padding
    _, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # [n], values in 0..u-1
    rows = torch.arange(inverse.shape[0], device=inverse.device)  # [n]
    count = int(inverse.max()) + 1
    first = torch.full((count,), inverse.shape[0], dtype=torch.long, device=inverse.device)  # [u]
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")  # [u]
    return first, inverse


def prompts_shared_often_enough(distinct: int, rows: int) -> bool:
    """Whether ``rows`` rows with ``distinct`` prompts score each prompt once: when on average each
    is used at least twice (the second forward call costs about as much as a few prompt tokens)."""
    return 2 * distinct <= rows


def _prefix_sharing_pays(model: PreTrainedModel, distinct: int, rows: int) -> bool:
    """Score shared prompts once when they are shared often enough and the model can take a KV cache.
    Never for an FSDP2-sharded model outside generation: its forwards are collectives and must be one
    per micro-batch on every rank (cohort.distributed)."""
    return prompts_shared_often_enough(distinct, rows) and not _recomputes_activations(model) and not _sharded(model)


def _sharded(model: torch.nn.Module) -> bool:
    """Whether an FSDP2 unit of ``model`` holds sharded parameters now (not gathered for generation)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) and not _gathered(m) for m in unwrap(model).modules())


def _gathered(unit: torch.nn.Module) -> bool:
    group = unit._get_fsdp_state()._fsdp_param_group
    return group is not None and group.is_unsharded


def _recomputes_activations(model: torch.nn.Module) -> bool:
    """Whether activation checkpointing is active: transformers checkpoints (and turns the KV cache
    off in) a layer that has it on and is in training mode, the model's or just the layer's own
    (cohort.training.trainer.checkpoint_layers)."""
    return any(getattr(m, "gradient_checkpointing", False) is True and m.training for m in unwrap(model).modules())


def _logits_with_shared_prompts(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    first: torch.Tensor,
    inverse: torch.Tensor,
) -> torch.Tensor:
    """Each distinct prompt runs once; its KV cache is gathered for its rows (differentiably), then
    the completions run on top. Same math as one forward per row. -> [n, T, V]"""
    unique_mask = prompt_mask[first]  # [u, Lp]
    unique_ids = torch.where(unique_mask, prompt_ids[first], 0)  # [u, Lp]
    cache, last_prompt_logits = prefill_prompts(model, unique_ids, unique_mask)  # [u, V]: predicts each first token
    pieces = [last_prompt_logits[inverse].unsqueeze(1)]  # [n, 1, V]
    width = completion_ids.shape[1]
    if width > 1:
        cache.batch_select_indices(inverse)  # [u, ...] -> [n, ...], gradients flow back to the shared prompt
        row_mask = unique_mask[inverse]  # [n, Lp]
        inputs = completion_ids[:, :-1]  # [n, T-1]: token t predicts token t+1
        inputs_mask = completion_mask[:, :-1]  # [n, T-1]
        positions = row_mask.sum(-1, keepdim=True) + torch.arange(width - 1, device=inputs.device)  # [n, T-1]
        pieces.append(
            model(
                input_ids=torch.where(inputs_mask, inputs, 0),
                attention_mask=torch.cat([row_mask, inputs_mask], dim=1),  # [n, Lp+T-1]
                position_ids=positions,
                use_cache=True,
                **cache_kwargs(model, cache),
            ).logits  # [n, T-1, V]
        )
    return torch.cat(pieces, dim=1)  # [n, T, V]


def _completion_logits(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Logits that predict each completion token (position p predicts token p+1). -> [n, T, V]"""
    _check_scoring_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    first, inverse = shared_prompts(prompt_ids, prompt_mask)
    if _prefix_sharing_pays(model, first.shape[0], prompt_ids.shape[0]):
        return _logits_with_shared_prompts(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse)
    width = completion_ids.shape[1]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [n, Lp+T]
    # Padding may hold any value (even ids outside the vocabulary); the model never attends to it.
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1).masked_fill(~attention_mask, 0)  # [n, Lp+T]
    kwargs = {}
    if supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = width + 1
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=left_padded_position_ids(attention_mask),
        use_cache=False,
        **kwargs,
    ).logits  # [n, T+1, V] (or [n, Lp+T, V] without logits_to_keep)
    return logits[:, -(width + 1) : -1, :]  # [n, T, V]


RECOMPUTE_ABOVE_LOGITS = 1 << 24  # ~64 MiB of float32 logits: above it the head is recomputed in the backward
_PLAIN_HEADS: dict[type, bool] = {}  # model class -> its logits are the head applied to the last hidden states


def _head_is_plain(model: torch.nn.Module) -> bool:
    """Whether ``logits == output_embeddings(last hidden state)`` exactly for this model class, i.e.
    nothing (soft-capping, scaling) follows the head in its forward; checked once per class on a tiny input."""
    inner = unwrap(model)
    known = _PLAIN_HEADS
    if type(inner) in known:
        return known[type(inner)]
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    plain = False
    if head is not None and hasattr(inner, "set_output_embeddings"):
        device = next(inner.parameters()).device
        ids = torch.arange(1, 4, device=device).unsqueeze(0) % max(2, inner.get_input_embeddings().num_embeddings)
        with torch.no_grad():
            reference = inner(input_ids=ids, use_cache=False).logits
            with _hidden_states_out(inner) as real_head:
                plain = bool(torch.allclose(real_head(inner(input_ids=ids, use_cache=False).logits), reference, atol=1e-5, rtol=1e-4))
    known[type(inner)] = plain
    return plain


@contextlib.contextmanager
def _hidden_states_out(model: torch.nn.Module):
    """Within: the model's forward returns its last hidden states as ``logits`` (the head is set aside
    and yielded), so the caller applies the head chunk by chunk."""
    inner = unwrap(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


def _head_chunk(head: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """Log-prob of ``tokens`` and the (detached) entropy from one chunk of hidden states. [m, H] -> ([m], [m])"""
    logits = head(hidden).float() / temperature  # [m, V]
    log_norm = torch.logsumexp(logits, dim=-1)  # [m]
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - log_norm  # [m]
    with torch.no_grad():
        log_p = logits - log_norm.unsqueeze(-1)  # [m, V]
        entropy = -(log_p.exp() * log_p).sum(-1)  # [m]
    return picked, entropy


def _chunked_head(head: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float,
                  chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies through the head, ``chunk_rows`` positions at a time. With gradients and
    more than ``RECOMPUTE_ABOVE_LOGITS`` logits in all, each chunk is recomputed in the backward
    (torch.utils.checkpoint), so no [n, T, V] tensor is ever kept; below it the saved chunks are
    small and recomputing would only cost time.
    hidden: [n, T, H]; tokens: [n, T] -> ([n, T] float32, [n, T] float32)"""
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [n*T, H]
    flat_tokens = tokens.reshape(-1)  # [n*T]
    vocab = head.weight.shape[0] if hasattr(head, "weight") else 1
    step = max(16, min(chunk_rows, (1 << 25) // max(1, vocab)))  # at most ~32 M logits at once
    recompute = torch.is_grad_enabled() and hidden.requires_grad and flat_hidden.shape[0] * vocab > RECOMPUTE_ABOVE_LOGITS
    logprobs, entropies = [], []
    for start in range(0, flat_hidden.shape[0], step):
        piece = (flat_hidden[start : start + step], flat_tokens[start : start + step])
        if recompute:
            picked, entropy = torch.utils.checkpoint.checkpoint(_head_chunk, head, *piece, temperature, use_reentrant=False)
        else:
            picked, entropy = _head_chunk(head, *piece, temperature)
        logprobs.append(picked)
        entropies.append(entropy)
    shape = tokens.shape
    if not logprobs:
        zeros = torch.zeros(shape, dtype=torch.float32, device=hidden.device)
        return zeros, zeros
    return torch.cat(logprobs).reshape(shape), torch.cat(entropies).reshape(shape)  # [n, T] each


def _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows):
    _check_scoring_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    tokens = torch.where(completion_mask, completion_ids, torch.zeros_like(completion_ids))  # [n, T]
    if _head_is_plain(model):  # the head runs chunk by chunk: no [n, T, V] logits, in the forward or the backward
        with _hidden_states_out(model) as head:
            hidden = _completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)  # [n, T, H]
        return _chunked_head(head, hidden, tokens, temperature, chunk_rows)
    logits = _completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)  # [n, T, V]
    logprobs = token_logprobs(logits, tokens, temperature, chunk_rows)  # [n, T]
    with torch.no_grad():
        entropy = entropy_from_logits(logits.detach(), temperature, chunk_rows)  # [n, T]
    return logprobs, entropy


def completion_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """float32 log-prob of every completion token under ``softmax(logits / temperature)``.

    prompt_ids/prompt_mask: [n, Lp] left-padded; completion_ids/completion_mask: [n, T]
    right-padded -> [n, T]. Padded positions may hold any id; their values are finite but
    meaningless (select them away with the mask). Differentiable; also runs under ``torch.no_grad()``.
    Use the rollout's logprob temperature (1.0 for greedy sampling). The output head runs on
    chunks of positions, so the [n, T, vocabulary] logits never exist at once.
    """
    return _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows)[0]


def completion_logprobs_and_entropy(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`completion_logprobs`, plus the entropy (nats) of each predicting distribution,
    from the same forward. The entropy is detached (a metric). -> ([n, T], [n, T])"""
    return _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows)
