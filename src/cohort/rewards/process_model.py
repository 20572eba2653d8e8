"""Process supervision: split completions into steps and score every step with a process reward model.

The PRM is a local HF token-classification model in TRL's PRM layout: its input is the prompt
followed by ``step_1 + separator + step_2 + separator + ...`` and it scores each step at the last
token of the separator after it. A step's score is a probability: the sigmoid of a single-logit
head (what ``cohort train-rm process`` writes), or the softmax probability of ``label`` for a head
with several labels. The scores go to ``cohort.algo.process_advantages`` together with the index of
each step's last token in the *policy's* completion (docs/spec.md §4).

``path: gold`` stands for the task's gold step checker instead of a model (the multi-step task's
``check_steps``: 1 for a right step, 0 for a wrong one): the control that tells process supervision
as a signal apart from the quality of one learned PRM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cohort.assets import resolve_builtin
from cohort.models.loading import resolve_device, resolve_dtype, resolve_model_source
from cohort.rewards.multistep import GoldStepScorer
from cohort.rewards.step_spans import StepScores, split_steps, step_tensors, token_ends

__all__ = ["GOLD", "ProcessRewardModel", "StepScores", "split_steps", "step_tensors", "token_ends"]

GOLD = "gold"
"""``reward.process_model: {path: gold}``: score steps with the task's gold checker (a local model
directory named ``gold`` is spelled ``./gold``)."""


class ProcessRewardModel:
    """Scores each reasoning step of each completion with a token-classification PRM (or, with
    ``path="gold"``, with the task's gold step checker)."""

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
        self.gold = GoldStepScorer(policy_tokenizer, step_marker) if path == GOLD else None
        if self.gold is not None:
            return
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
            values = logits[..., 0].sigmoid() if logits.shape[-1] == 1 else logits.softmax(-1)[..., self.label]  # [b, L]
            for row, (_, positions) in enumerate(chunk):
                scores.append(values[row, positions].tolist())
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str],
                 completion_ids: Sequence[Sequence[int]]) -> list[StepScores | None]:
        if self.gold is not None:
            return self.gold(prompts, completions, completion_ids)
        spans = [split_steps(text, self.step_marker) for text in completions]
        inputs = [self._input(p, [text[a:b] for a, b in s]) for p, text, s in zip(prompts, completions, spans)]
        step_scores = self._score(inputs)
        return [
            StepScores(scores, token_ends(self.policy_tokenizer, ids, [b for _, b in s]))
            for scores, ids, s in zip(step_scores, completion_ids, spans)
        ]
