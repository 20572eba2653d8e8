"""Sampling settings and the choice of the next token from a batch of logits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled.

    Attributes:
        max_new_tokens: generation budget per completion (>= 1); a completion that reaches it
            without EOS or stop string finishes with reason "length".
        temperature: softmax temperature; 0 means greedy (argmax).
        top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches top_p, in (0, 1]; 1 turns it off.
        top_k: keep only the k most likely tokens; 0 or None turns it off.
        eos_token_ids: every id that ends a completion (the EOS token is kept in it).
        stop_strings: a completion also ends at the token that completes one of these strings
            in its decoded text (needs a tokenizer at generation time).

    Filters apply in the order temperature, top-k, top-p (as in ``transformers``). The recorded
    sampling log-probs ignore the filters: they are log-probs under ``softmax(logits / T)``
    with ``T = logprob_temperature``, i.e. what the training forward recomputes.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    eos_token_ids: tuple[int, ...] = field(default=())
    stop_strings: tuple[str, ...] = field(default=())

    @classmethod
    def for_run(cls, rollout: Any, eos_token_ids: tuple[int, ...]) -> "SamplingParams":
        """The sampling settings of a run's ``rollout`` section (a :class:`cohort.config.RolloutConfig`)."""
        return cls(
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k or None,
            max_new_tokens=rollout.max_new_tokens,
            eos_token_ids=eos_token_ids,
            stop_strings=tuple(rollout.stop),
        )

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise ValueError(f"top_k must be None or an integer >= 0 (0/None = off), got {self.top_k!r}")
        eos_ids = (self.eos_token_ids,) if isinstance(self.eos_token_ids, int) else tuple(self.eos_token_ids)
        if any(not _is_int(i) or i < 0 for i in eos_ids):
            raise ValueError(f"eos_token_ids must be non-negative integers, got {self.eos_token_ids!r}")
        stop_strings = (self.stop_strings,) if isinstance(self.stop_strings, str) else tuple(self.stop_strings)
        if any(not isinstance(s, str) or not s for s in stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "eos_token_ids", tuple(sorted(set(eos_ids))))
        object.__setattr__(self, "stop_strings", stop_strings)

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the recorded log-probs: the sampling temperature, or 1 for greedy."""
        return 1.0 if self.greedy else self.temperature


def filter_logits(scaled_logits: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and then outside the top-p nucleus.

    The most likely token always survives. The nucleus is searched among the largest logits
    first (64, then 4x more while some row's nucleus is wider), because a full vocabulary sort
    is slow on CPU. scaled_logits: [n, V] -> [n, V]
    """
    filtered = scaled_logits
    vocab_size = scaled_logits.shape[-1]
    if top_k and top_k < vocab_size:
        kth_largest = torch.topk(filtered, top_k, dim=-1).values[:, -1:]  # [n, 1]
        filtered = filtered.masked_fill(filtered < kth_largest, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(filtered, dim=-1)  # [n, V]
        width = min(top_k or 64, vocab_size)
        while True:
            top_probs, top_index = torch.topk(probs, width, dim=-1)  # [n, k], sorted descending
            mass = torch.cumsum(top_probs, dim=-1)  # [n, k]
            if width == vocab_size or bool((mass[:, -1] >= top_p).all()):
                break
            width = min(4 * width, vocab_size)
        keep_sorted = (mass - top_probs) < top_p  # [n, k]; the first token has 0 mass before it
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_index, keep_sorted)  # [n, V]
        filtered = filtered.masked_fill(~keep, float("-inf"))
    return filtered


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row drawn from ``probs`` (rows need not sum to 1) by inverse-CDF sampling.

    One uniform number per row (``uniform`` [n], or drawn from ``generator``) and a binary search:
    on CPU this is several times faster than ``torch.multinomial``, which is slow for large
    vocabularies. Tokens of probability 0 are never drawn. probs: [n, V] -> [n] long
    """
    cdf = torch.cumsum(probs, dim=-1)  # [n, V], non-decreasing
    total = cdf[:, -1:]  # [n, 1]
    if uniform is None:
        uniform = torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype)  # [n, 1]
    else:
        uniform = uniform.to(cdf.dtype).reshape(total.shape)  # [n, 1]
    # Strictly below the total, so the search always lands on a token with positive probability.
    target = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))  # [n, 1]
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # [n]
    return index.clamp_(max=probs.shape[-1] - 1)  # only a NaN row lands past the end


def choose_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of every row and its log-prob under ``softmax(logits / logprob_temperature)``.

    ``uniform`` [n] gives each row its own random number (else they come from ``generator``).
    logits: [n, V] float32 -> (tokens [n] long, logprobs [n] float32)
    """
    if params.greedy:
        tokens = logits.argmax(dim=-1)  # [n]
        logprobs = torch.log_softmax(logits, dim=-1)  # [n, V]
    else:
        scaled = logits / params.temperature  # [n, V]
        logprobs = torch.log_softmax(scaled, dim=-1)  # [n, V]
        filtered = filter_logits(scaled, params.top_k, params.top_p)  # [n, V]
        probs = logprobs.exp() if filtered is scaled else torch.softmax(filtered, dim=-1)  # [n, V]
        tokens = sample_from_probs(probs, generator, uniform)  # [n]
    picked = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [n]
    return tokens, picked
