"""The Rollout value: G sampled completions per prompt, their masks and sampling log-probs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FINISH_REASONS = ("eos", "stop", "length")


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token-id lists into a left-padded batch and its bool mask (True = real token).

    -> (ids [P, L] long, mask [P, L] bool), L = the longest sequence
    """
    rows = [torch.as_tensor(list(seq), dtype=torch.long) for seq in sequences]
    ids = torch.nn.utils.rnn.pad_sequence(
        rows, batch_first=True, padding_value=pad_token_id, padding_side="left"
    )  # [P, L]
    lengths = torch.tensor([len(row) for row in rows])  # [P]
    positions = torch.arange(ids.shape[1])  # [L]
    mask = positions.unsqueeze(0) >= (ids.shape[1] - lengths).unsqueeze(1)  # [P, L]
    return ids.to(device), mask.to(device)


@dataclass(frozen=True)
class Rollout:
    """G completions for each of P prompts, group-contiguous (rows g*G .. g*G+G-1 are prompt g's).

    Attributes:
        prompt_ids: [P, Lp] long, left-padded with ``pad_token_id``.
        prompt_mask: [P, Lp] bool, True on real prompt tokens.
        group_size: G, completions per prompt.
        completion_ids: [N, T] long, N = P*G, right-padded with ``pad_token_id``; T is the
            longest completion.
        completion_mask: [N, T] bool, True on generated tokens up to and including the first
            EOS / the token that completes a stop string; every generated token if truncated.
        sampling_logprobs: [N, T] float32, log-prob of each sampled token under
            ``softmax(logits / logprob_temperature)`` without top-k/top-p renormalisation;
            0 on padding.
        finish_reasons: N strings, each "eos", "stop" or "length".
        logprob_temperature: the temperature of ``sampling_logprobs`` (1.0 for greedy); score
            completions with the same value.
        pad_token_id: the id in padded positions.
        sampled_by_policy: True when ``sampling_logprobs`` come from the policy's own forward (the
            native engine: pi_old at mu = 1); False when another engine sampled (vLLM: its kernels
            round differently, so the trainer recomputes pi_old and measures the mismatch).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    group_size: int
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    sampling_logprobs: torch.Tensor
    finish_reasons: list[str]
    logprob_temperature: float
    pad_token_id: int
    sampled_by_policy: bool = True

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.prompt_mask.dtype != torch.bool or self.completion_mask.dtype != torch.bool:
            raise ValueError("prompt_mask and completion_mask must be bool tensors (True = real token)")
        if self.prompt_ids.dim() != 2 or self.prompt_mask.shape != self.prompt_ids.shape:
            raise ValueError(
                f"prompt_ids and prompt_mask must be [P, Lp] of one shape, got {tuple(self.prompt_ids.shape)} "
                f"and {tuple(self.prompt_mask.shape)}"
            )
        expected = (self.prompt_ids.shape[0] * self.group_size, self.completion_ids.shape[-1])
        for name in ("completion_ids", "completion_mask", "sampling_logprobs"):
            if tuple(getattr(self, name).shape) != expected:
                shape = tuple(getattr(self, name).shape)
                raise ValueError(f"{name} must have shape [P*G, T] = {expected}, got {shape}")
        if len(self.finish_reasons) != expected[0]:
            raise ValueError(
                f"finish_reasons must have one entry per completion ({expected[0]}), got {len(self.finish_reasons)}"
            )
        unknown = set(self.finish_reasons) - set(FINISH_REASONS)
        if unknown:
            raise ValueError(f"finish_reasons must be in {FINISH_REASONS}, got {sorted(unknown)}")

    @property
    def num_prompts(self) -> int:
        """P, the number of prompts (groups)."""
        return self.prompt_ids.shape[0]

    @property
    def num_completions(self) -> int:
        """N = P * G, the number of completions (rows)."""
        return self.completion_ids.shape[0]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """Tokens per completion, EOS included. -> [N] long"""
        return self.completion_mask.sum(dim=-1)  # [N]

    @property
    def truncated(self) -> torch.Tensor:
        """True for completions that hit the token budget (finish reason "length"). -> [N] bool"""
        return torch.tensor([reason == "length" for reason in self.finish_reasons], device=self.completion_ids.device)

    @property
    def group_ids(self) -> torch.Tensor:
        """The prompt (group) index of every completion: [0]*G + [1]*G + ... -> [N] long"""
        groups = torch.arange(self.num_prompts, device=self.completion_ids.device)  # [P]
        return groups.repeat_interleave(self.group_size)  # [N]

    def expanded_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids and mask repeated to one row per completion. -> ([N, Lp], [N, Lp])"""
        ids = self.prompt_ids.repeat_interleave(self.group_size, dim=0)  # [N, Lp]
        mask = self.prompt_mask.repeat_interleave(self.group_size, dim=0)  # [N, Lp]
        return ids, mask

    def select_groups(self, groups: Sequence[int] | torch.Tensor) -> Rollout:
        """A Rollout with only the given prompts (in that order) and all G completions of each."""
        index = torch.as_tensor(groups, dtype=torch.long).flatten()  # [P']
        if index.numel() and (index.min() < 0 or index.max() >= self.num_prompts):
            raise ValueError(f"group indices must be in [0, {self.num_prompts}), got {index.tolist()}")
        rows = (index.unsqueeze(1) * self.group_size + torch.arange(self.group_size)).flatten()  # [P'*G]
        device_rows = rows.to(self.completion_ids.device)
        device_index = index.to(self.prompt_ids.device)
        return Rollout(
            prompt_ids=self.prompt_ids[device_index],
            prompt_mask=self.prompt_mask[device_index],
            group_size=self.group_size,
            completion_ids=self.completion_ids[device_rows],
            completion_mask=self.completion_mask[device_rows],
            sampling_logprobs=self.sampling_logprobs[device_rows],
            finish_reasons=[self.finish_reasons[row] for row in rows.tolist()],
            logprob_temperature=self.logprob_temperature,
            pad_token_id=self.pad_token_id,
            sampled_by_policy=self.sampled_by_policy,
        )

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with every tensor on ``device``."""
        return Rollout(
            prompt_ids=self.prompt_ids.to(device),
            prompt_mask=self.prompt_mask.to(device),
            group_size=self.group_size,
            completion_ids=self.completion_ids.to(device),
            completion_mask=self.completion_mask.to(device),
            sampling_logprobs=self.sampling_logprobs.to(device),
            finish_reasons=list(self.finish_reasons),
            logprob_temperature=self.logprob_temperature,
            pad_token_id=self.pad_token_id,
            sampled_by_policy=self.sampled_by_policy,
        )

    def completion_token_lists(self) -> list[list[int]]:
        """Each completion's token ids without padding (EOS kept)."""
        lengths = self.completion_lengths.tolist()
        return [row[:length] for row, length in zip(self.completion_ids.tolist(), lengths)]

    def decode_completions(self, tokenizer, *, skip_special_tokens: bool = True) -> list[str]:
        """The completions as text (special tokens such as EOS dropped by default)."""
        return tokenizer.batch_decode(self.completion_token_lists(), skip_special_tokens=skip_special_tokens)


def concat_rollouts(parts: Sequence[Rollout]) -> Rollout:
    """One Rollout holding the groups of ``parts`` in order (re-padded to common widths).

    Prompts are re-left-padded and completions re-right-padded; all parts must share the group
    size, pad id and log-prob temperature.
    """
    if not parts:
        raise ValueError("concat_rollouts needs at least one rollout")
    first = parts[0]
    for part in parts[1:]:
        same = (part.group_size, part.pad_token_id, part.logprob_temperature, part.sampled_by_policy)
        if same != (first.group_size, first.pad_token_id, first.logprob_temperature, first.sampled_by_policy):
            raise ValueError("rollouts to concatenate must share group_size, pad_token_id, logprob_temperature and engine")
    if len(parts) == 1:
        return first
    prompt_width = max(p.prompt_ids.shape[1] for p in parts)
    width = max(p.completion_ids.shape[1] for p in parts)

    def pad(tensor: torch.Tensor, to: int, value, left: bool) -> torch.Tensor:
        missing = to - tensor.shape[1]
        return torch.nn.functional.pad(tensor, (missing, 0) if left else (0, missing), value=value)

    return Rollout(
        prompt_ids=torch.cat([pad(p.prompt_ids, prompt_width, first.pad_token_id, True) for p in parts]),  # [P, Lp]
        prompt_mask=torch.cat([pad(p.prompt_mask, prompt_width, False, True) for p in parts]),  # [P, Lp]
        group_size=first.group_size,
        completion_ids=torch.cat([pad(p.completion_ids, width, first.pad_token_id, False) for p in parts]),  # [N, T]
        completion_mask=torch.cat([pad(p.completion_mask, width, False, False) for p in parts]),  # [N, T]
        sampling_logprobs=torch.cat([pad(p.sampling_logprobs, width, 0.0, False) for p in parts]),  # [N, T]
        finish_reasons=[reason for p in parts for reason in p.finish_reasons],
        logprob_temperature=first.logprob_temperature,
        pad_token_id=first.pad_token_id,
        sampled_by_policy=first.sampled_by_policy,
    )


def rollout_from_tokens(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    group_size: int,
    pad_token_id: int,
    *,
    finish_reasons: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
) -> Rollout:
    """A Rollout of given completions (SFT targets, stored samples, preference pairs): ``group_size``
    completions per prompt, group-contiguous. Sampling log-probs are zeros: these completions were not
    sampled now, so nothing may use them as pi_old.

    prompt_ids: P token lists; completion_ids: P * group_size token lists (each non-empty)
    """
    if len(completion_ids) != len(prompt_ids) * group_size:
        raise ValueError(f"{len(completion_ids)} completions for {len(prompt_ids)} prompts x group_size {group_size}")
    if any(len(ids) == 0 for ids in completion_ids):
        raise ValueError("every completion needs at least one token")
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id, device)  # [P, Lp]
    width = max(len(ids) for ids in completion_ids)
    ids = torch.full((len(completion_ids), width), pad_token_id, dtype=torch.long)  # [N, T]
    mask = torch.zeros((len(completion_ids), width), dtype=torch.bool)  # [N, T]
    for row, tokens in enumerate(completion_ids):
        ids[row, : len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
        mask[row, : len(tokens)] = True
    return Rollout(
        prompt_ids=prompts,
        prompt_mask=prompt_mask,
        group_size=group_size,
        completion_ids=ids.to(device),
        completion_mask=mask.to(device),
        sampling_logprobs=torch.zeros(ids.shape, dtype=torch.float32, device=device),
        finish_reasons=list(finish_reasons) if finish_reasons is not None else ["eos"] * len(completion_ids),
        logprob_temperature=1.0,
        pad_token_id=pad_token_id,
    )
