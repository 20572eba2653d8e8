"""Model inputs for reward-model training, built exactly as cohort's scorers build them.

Outcome RM: the text is ``conversation_text(tokenizer, prompt, completion)`` tokenized with the
tokenizer's special tokens (and right-truncated to ``max_length`` when one is set), as
:class:`cohort.rewards.reward_model.RewardModelReward` does; the sequence-classification head
pools the last non-pad token, so the training forward *is* the scoring forward.

Process RM: the prompt's ids (with special tokens; chat prompts rendered with the generation
prompt) followed by ``step_1 + separator + step_2 + separator ...``, each step scored at the last
token of the separator after it, as :meth:`cohort.rewards.process_model.ProcessRewardModel._input`
does. Batches are right-padded, as in both scorers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cohort.reward_training.examples import OutcomeExample, ProcessExample
from cohort.rewards.reward_model import conversation_text


@dataclass(frozen=True)
class Encoded:
    """One example as model input: token ids, where it is scored, and the label of each scored unit.

    ``positions`` is None for an outcome example (the classification head pools the last non-pad
    token) and the 0-based position of each step's score for a process example. ``group`` names the
    example's prompt: samples of one prompt are compared with each other (within-group AUC).
    """

    ids: list[int]
    positions: tuple[int, ...] | None
    labels: tuple[float, ...]
    truncated: bool = False
    group: str = ""


def group_key(prompt: Any) -> str:
    """A hashable name for a prompt (a string as is, chat messages as canonical JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def encode_outcome(tokenizer, example: OutcomeExample, max_length: int | None) -> Encoded:
    """The outcome RM's input for one example (what RewardModelReward scores)."""
    text = conversation_text(tokenizer, example.prompt, example.completion)
    full = tokenizer(text)["input_ids"]
    group = group_key(example.prompt)
    if max_length is None or len(full) <= max_length:
        return Encoded(list(full), None, (example.label,), group=group)
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    return Encoded(list(ids), None, (example.label,), truncated=True, group=group)


def prm_prompt_text(tokenizer, prompt: Any) -> str:
    """The prompt as the PRM reads it: a string as is, chat messages through the chat template."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat-message prompts need a process reward model tokenizer with a chat template")
    return tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False, add_generation_prompt=True)


def separator_ids(tokenizer, separator: str) -> list[int]:
    """The PRM separator's token ids (ValueError when it encodes to none)."""
    ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the PRM separator {separator!r} encodes to no tokens")
    return list(ids)


def encode_process(tokenizer, example: ProcessExample, separator: Sequence[int], max_length: int | None) -> Encoded | None:
    """The PRM's input for one example (what ProcessRewardModel._input builds). Past
    ``max_length`` the ids are cut and the steps scored beyond it dropped; None when no step fits."""
    ids = list(tokenizer(prm_prompt_text(tokenizer, example.prompt))["input_ids"])
    positions = []
    for step in example.steps:
        ids += tokenizer(step, add_special_tokens=False)["input_ids"] + list(separator)
        positions.append(len(ids) - 1)
    group = group_key(example.prompt)
    if max_length is None or len(ids) <= max_length:
        return Encoded(ids, tuple(positions), example.labels, group=group)
    kept = [p for p in positions if p < max_length]
    if not kept:
        return None
    return Encoded(ids[:max_length], tuple(kept), example.labels[: len(kept)], truncated=True, group=group)


def collate(items: Sequence[Encoded], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask. -> ([b, L] long, [b, L] long)"""
    width = max(len(item.ids) for item in items)
    input_ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)  # [b, L]
    attention = torch.zeros((len(items), width), dtype=torch.long)  # [b, L]
    for row, item in enumerate(items):
        input_ids[row, : len(item.ids)] = torch.tensor(item.ids)
        attention[row, : len(item.ids)] = 1
    return input_ids.to(device), attention.to(device)


def unit_logits(model, items: Sequence[Encoded], pad_token_id: int, device: torch.device) -> torch.Tensor:
    """The single logit of every scored unit of a batch, in order (examples, or their steps).
    Differentiable. -> [units] float32"""
    input_ids, attention = collate(items, pad_token_id, device)
    logits = model(input_ids=input_ids, attention_mask=attention).logits.float()  # [b, 1] or [b, L, 1]
    if items[0].positions is None:
        return logits[:, 0]  # [b]
    rows = torch.tensor([row for row, item in enumerate(items) for _ in item.positions], device=device)  # [units]
    cols = torch.tensor([p for item in items for p in item.positions], device=device)  # [units]
    return logits[rows, cols, 0]  # [units]


def unit_labels(items: Sequence[Encoded], device: torch.device) -> torch.Tensor:
    """The label of every scored unit of a batch, in the order of :func:`unit_logits`. -> [units] float32"""
    return torch.tensor([label for item in items for label in item.labels], dtype=torch.float32, device=device)
