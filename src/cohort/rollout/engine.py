"""Batched sampling of G completions per prompt with a shared, prefilled KV cache.

Each prompt is prefilled once (P left-padded rows, logits of the last position only); the cache
is then repeated G times so the G samples of a prompt share its prefill. Decoding advances every
unfinished row by one token per forward; rows that finished are dropped from the batch (cache
rows selected away) once they make up a quarter of it, so long-running stragglers do not pay
for finished rows. The cache grows in blocks (``cohort.rollout.kv_cache``): each token is written
in place instead of re-concatenating the whole cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.generation.stopping_criteria import StopStringCriteria

from cohort.models.scoring import cache_kwargs, prefill_prompts
from cohort.rollout.batch import FINISH_REASONS, Rollout, left_pad
from cohort.rollout.kv_cache import DEFAULT_BLOCK, grow_in_blocks
from cohort.rollout.sampling import SamplingParams, choose_tokens

# Drop finished rows from the decode batch once they are this fraction of it (each drop copies
# the KV cache, so dropping at every single finish would cost more than it saves).
COMPACT_FRACTION = 0.25
GROW_IN_BLOCKS = True  # False: transformers' DynamicLayer (a torch.cat of the whole cache per token)
_EOS, _STOP, _LENGTH = (FINISH_REASONS.index(reason) for reason in ("eos", "stop", "length"))


def _max_positions(model: PreTrainedModel) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_request(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    group_size: int,
    params: SamplingParams,
    pad_token_id: int,
    generator: torch.Generator,
    tokenizer,
    device: torch.device,
) -> None:
    """Refuse, with a clear error, a request no engine can honour: bad settings, empty prompts, ids
    outside the vocabulary's pad range, prompts plus the budget beyond the model's positions."""
    if not isinstance(params, SamplingParams):
        raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: give at least one prompt")
    vocab_size = model.get_input_embeddings().num_embeddings
    if not 0 <= pad_token_id < vocab_size:
        raise ValueError(f"pad_token_id must be a token id in [0, {vocab_size}), got {pad_token_id}")
    for index, prompt in enumerate(prompt_ids):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty: every prompt needs at least one token")
    longest = max(len(prompt) for prompt in prompt_ids)
    limit = _max_positions(model)
    if limit is not None and longest > limit:
        raise ValueError(f"the longest prompt has {longest} tokens, more than the model's {limit} positions")
    if limit is not None and longest + params.max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens ({params.max_new_tokens}) exceeds the "
            f"model's {limit} positions; shorten the prompt or lower max_new_tokens"
        )
    if params.stop_strings and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer: pass tokenizer=...")
    if torch.device(generator.device).type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model is on {device}; create it there")


def generate_rollout(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    group_size: int,
    params: SamplingParams,
    *,
    pad_token_id: int,
    generator: torch.Generator,
    tokenizer=None,
    shard: tuple[int, int] | None = None,
) -> Rollout:
    """Sample ``group_size`` completions for each prompt (token-id lists) and return a Rollout.

    Deterministic for a given ``generator`` state (on the model's device): completion row r takes
    the random number ``U[r, t]`` at step t from one matrix ``U`` drawn up front, so a row's sample
    does not depend on which other rows share its batch. ``shard = (offset, total)`` says these
    prompts' rows are rows ``offset ..`` of a batch of ``total`` rows drawn with the same generator
    state elsewhere (a data-parallel rank's share): the samples equal those of the whole batch.
    ``tokenizer`` is needed only for ``params.stop_strings``; a stop string is matched in the
    completion's text only (not across the prompt boundary). Runs under ``torch.inference_mode()``
    with the model in its current mode (call ``.eval()`` first if it has dropout).
    """
    device = next(model.parameters()).device
    check_request(model, prompt_ids, group_size, params, pad_token_id, generator, tokenizer, device)
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id, device)  # [P, Lp]
    vocab_size = model.get_input_embeddings().num_embeddings
    if int(prompts.min()) < 0 or int(prompts.max()) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}) (the model's vocabulary)")
    stop_criteria = StopStringCriteria(tokenizer, list(params.stop_strings)) if params.stop_strings else None
    uniforms = _row_uniforms(len(prompt_ids) * group_size, params, generator, shard, device)  # [N, max_new] or None
    with torch.inference_mode():
        completions, logprobs, lengths, reasons = _decode(
            model, prompts, prompt_mask, group_size, params, pad_token_id, uniforms, stop_criteria
        )
    if bool(torch.isnan(logprobs).any()):
        raise FloatingPointError("the model produced NaN or infinite logits during the rollout")
    width = max(int(lengths.max()), 1)
    completion_mask = torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)  # [N, T]
    return Rollout(
        prompt_ids=prompts,
        prompt_mask=prompt_mask,
        group_size=group_size,
        completion_ids=completions[:, :width].clone(),
        completion_mask=completion_mask,
        sampling_logprobs=logprobs[:, :width].clone(),
        finish_reasons=[FINISH_REASONS[code] for code in reasons.tolist()],
        logprob_temperature=params.logprob_temperature,
        pad_token_id=pad_token_id,
    )


def _prefill(
    model: PreTrainedModel, prompts: torch.Tensor, prompt_mask: torch.Tensor, group_size: int, budget: int
) -> tuple[DynamicCache, torch.Tensor]:
    """Run each prompt once and share its KV cache among its G samples.

    -> (cache with P*G rows, next-token logits [P*G, V] float32)
    """
    cache, logits = prefill_prompts(model, prompts, prompt_mask)
    logits = logits.float()  # [P, V]
    if GROW_IN_BLOCKS:  # decoding writes each token in place, no whole-cache torch.cat per token
        grow_in_blocks(cache, block=min(DEFAULT_BLOCK, budget))  # short budgets reserve only what they can use
    if group_size > 1:
        cache.batch_repeat_interleave(group_size)
        logits = logits.repeat_interleave(group_size, dim=0)  # [P*G, V]
    return cache, logits


def _row_uniforms(
    rows: int, params: SamplingParams, generator: torch.Generator, shard: tuple[int, int] | None, device: torch.device
) -> torch.Tensor | None:
    """The random number of every (row, step) of this call's rows; None for greedy decoding. -> [N, max_new]"""
    if params.greedy:
        return None
    offset, total = shard if shard is not None else (0, rows)
    if not 0 <= offset <= total - rows:
        raise ValueError(f"shard=(offset {offset}, total {total}) cannot hold these {rows} completion rows")
    return torch.rand((total, params.max_new_tokens), generator=generator, device=device)[offset : offset + rows]  # [N, max_new]


def _output_buffers(total: int, budget: int, pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Completion ids [N, max_new] (pad), their log-probs [N, max_new] (0), lengths [N] (budget) and
    finish reasons [N] ("length") before decoding."""
    return (
        torch.full((total, budget), pad_token_id, dtype=torch.long, device=device),
        torch.zeros((total, budget), dtype=torch.float32, device=device),
        torch.full((total,), budget, dtype=torch.long, device=device),
        torch.full((total,), _LENGTH, dtype=torch.long, device=device),
    )


def _ended(
    tokens: torch.Tensor, live: torch.Tensor, eos_ids: torch.Tensor, stop_criteria: StopStringCriteria | None, so_far: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose new token is an EOS, and rows (not already at EOS) that just completed a stop string. -> ([n], [n]) bool"""
    finished = live & torch.isin(tokens, eos_ids)  # [n]
    if stop_criteria is None:
        return finished, torch.zeros_like(finished)
    return finished, live & ~finished & stop_criteria(so_far, None)  # [n]


def _decode(
    model: PreTrainedModel,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor,
    group_size: int,
    params: SamplingParams,
    pad_token_id: int,
    uniforms: torch.Tensor | None,
    stop_criteria: StopStringCriteria | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decode loop. -> (ids [N, max_new] long, logprobs [N, max_new] f32, lengths [N], reasons [N])"""
    device = prompts.device
    num_prompts, prompt_width = prompts.shape
    budget = params.max_new_tokens
    total = num_prompts * group_size
    completions, logprobs, lengths, reasons = _output_buffers(total, budget, pad_token_id, device)
    eos_ids = torch.tensor(params.eos_token_ids, dtype=torch.long, device=device)  # [E]

    cache, logits = _prefill(model, prompts, prompt_mask, group_size, budget)  # logits [N, V]
    attention = torch.zeros((total, prompt_width + budget), dtype=torch.bool, device=device)  # [N, Lp+max_new]
    attention[:, :prompt_width] = prompt_mask.repeat_interleave(group_size, dim=0)
    positions = prompt_mask.sum(dim=-1).repeat_interleave(group_size)  # [N], next token's position
    rows = torch.arange(total, device=device)  # [n], batch row -> completion row
    live = torch.ones(total, dtype=torch.bool, device=device)  # [n], rows still generating

    for step in range(budget):
        uniform = None if uniforms is None else uniforms[rows, step]  # [n]
        tokens, token_logprobs = choose_tokens(logits, params, uniform=uniform)  # [n], [n]
        tokens = torch.where(live, tokens, pad_token_id)  # [n]
        completions[rows, step] = tokens
        logprobs[rows, step] = torch.where(live, token_logprobs, 0.0)
        finished, stopped = _ended(tokens, live, eos_ids, stop_criteria, completions[rows, : step + 1])  # [n] each
        done = finished | stopped  # [n]
        last_step = step == budget - 1
        if bool(done.any()):
            lengths[rows[done]] = step + 1
            reasons[rows[finished]] = _EOS
            reasons[rows[stopped]] = _STOP
            live = live & ~done
            num_live = int(live.sum())
            if num_live == 0:
                break
            if not last_step and live.numel() - num_live >= COMPACT_FRACTION * live.numel():
                keep = live.nonzero().squeeze(-1)  # [n']
                cache.batch_select_indices(keep)
                rows, tokens, positions, attention = rows[keep], tokens[keep], positions[keep], attention[keep]
                live = live[keep]
        if last_step:
            break
        attention[:, prompt_width + step] = True
        logits = model(
            input_ids=tokens.unsqueeze(-1),  # [n, 1]
            attention_mask=attention[:, : prompt_width + step + 1],  # [n, Lp+step+1]
            position_ids=positions.unsqueeze(-1),  # [n, 1]
            use_cache=True,
            **cache_kwargs(model, cache),
        ).logits[:, -1, :].float()  # [n, V]
        positions = positions + 1
    return completions, logprobs, lengths, reasons
