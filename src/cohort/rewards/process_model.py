"""Process supervision: split completions into steps and score every step with a process reward model.

The PRM is a local HF token-classification model in TRL's PRM layout: its input is the prompt
followed by ``step_1 + separator + step_2 + separator + ...`` and it scores each step at the last
token of the separator after it. The scores go to ``cohort.algo.process_advantages`` together with
the index of each step's last token in the *policy's* completion (docs/spec.md §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cohort.assets import resolve_builtin
from cohort.models.loading import resolve_device, resolve_dtype, resolve_model_source


@dataclass(frozen=True)
class StepScores:
    """A completion's step rewards and the 1-based index of each step's last policy token."""

    rewards: list[float]
    ends: list[int]


def split_steps(text: str, marker: str = "\n") -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the non-blank steps of ``text`` split at ``marker``.

    Surrounding whitespace is not part of a step.

    >>> split_steps("a = 1\\n\\nb = 2\\n", "\\n")
    [(0, 5), (7, 12)]
    """
    if not marker:
        raise ValueError("the step marker must be a non-empty string")
    spans, start = [], 0
    for piece in text.split(marker):
        stripped = piece.strip()
        if stripped:
            begin = start + piece.index(stripped)
            spans.append((begin, begin + len(stripped)))
        start += len(piece) + len(marker)
    return spans


def token_ends(tokenizer, completion_ids: Sequence[int], char_ends: Sequence[int]) -> list[int]:
    """For each character offset (exclusive end of a step in the decoded completion), the 1-based index
    of the policy token that completes it, found by binary search over decoded prefixes."""
    ids = list(completion_ids)

    def decoded_length(count: int) -> int:
        return len(tokenizer.decode(ids[:count], skip_special_tokens=True))

    ends, low = [], 1
    for char_end in char_ends:
        lo, hi = low, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_length(mid) >= char_end:
                hi = mid
            else:
                lo = mid + 1
        ends.append(lo)
        low = lo + 1
    return ends


class ProcessRewardModel:
    """Scores each reasoning step of each completion with a token-classification PRM."""

    def __init__(
        self,
        path: str,
        policy_tokenizer,
        step_marker: str = "\n",
        separator: str = "\n",
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "float32",
        label: int = 1,
    ) -> None:
        source = resolve_model_source(resolve_builtin(path), what="model")
        self.device = resolve_device(device)
        from transformers import (  # on first use: loading transformers costs ~1 s
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        self.model = AutoModelForTokenClassification.from_pretrained(source, dtype=resolve_dtype(dtype)).to(self.device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        labels = self.model.config.num_labels
        if labels > 1 and not 0 <= label < labels:
            raise ValueError(f"process reward model: label must be in [0, {labels}), got {label}")
        self.label = label
        self.policy_tokenizer = policy_tokenizer
        self.step_marker = step_marker
        self.separator_ids = self.tokenizer(separator, add_special_tokens=False)["input_ids"]
        if not self.separator_ids:
            raise ValueError(f"the PRM separator {separator!r} encodes to no tokens")
        self.batch_size = batch_size

    def _prompt_text(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("chat-message prompts need a process reward model tokenizer with a chat template")
        return self.tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False, add_generation_prompt=True)

    def _input(self, prompt: Any, steps: list[str]) -> tuple[list[int], list[int]]:
        """PRM token ids and the positions (0-based) where each step is scored."""
        ids = list(self.tokenizer(self._prompt_text(prompt))["input_ids"])
        positions = []
        for step in steps:
            ids += self.tokenizer(step, add_special_tokens=False)["input_ids"] + self.separator_ids
            positions.append(len(ids) - 1)
        return ids, positions

    @torch.inference_mode()
    def _score(self, inputs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores: list[list[float]] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # [b, L]
            attention = torch.zeros((len(chunk), width), dtype=torch.long)  # [b, L]
            for row, (ids, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)).logits.float()  # [b, L, labels]
            values = logits[..., 0] if logits.shape[-1] == 1 else logits.softmax(-1)[..., self.label]  # [b, L]
            for row, (_, positions) in enumerate(chunk):
                scores.append(values[row, positions].tolist())
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], completion_ids: Sequence[Sequence[int]]) -> list[StepScores]:
        spans = [split_steps(text, self.step_marker) for text in completions]
        inputs = [self._input(p, [text[a:b] for a, b in s]) for p, text, s in zip(prompts, completions, spans)]
        step_scores = self._score(inputs)
        return [
            StepScores(scores, token_ends(self.policy_tokenizer, ids, [b for _, b in s]))
            for scores, ids, s in zip(step_scores, completion_ids, spans)
        ]


def step_tensors(scores: Sequence[StepScores | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-completion step scores for ``cohort.algo.process_advantages``.

    -> (step_rewards [N, K] float64, step_ends [N, K] long, step_mask [N, K] bool, scored [N] bool);
    ``None`` (the PRM could not score that completion) gives no steps and ``scored = False``.
    """
    width = max([len(s.rewards) for s in scores if s is not None] + [1])
    rewards = torch.zeros(len(scores), width, dtype=torch.float64)  # [N, K]
    ends = torch.ones(len(scores), width, dtype=torch.long)  # [N, K]
    mask = torch.zeros(len(scores), width, dtype=torch.bool)  # [N, K]
    scored = torch.tensor([item is not None for item in scores], dtype=torch.bool)  # [N]
    for row, item in enumerate(scores):
        if item is None or not item.rewards:
            continue
        k = len(item.rewards)
        rewards[row, :k] = torch.tensor(item.rewards, dtype=torch.float64)
        ends[row, :k] = torch.tensor(item.ends, dtype=torch.long)
        mask[row, :k] = True
    return rewards, ends, mask, scored
