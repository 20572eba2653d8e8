"""An outcome reward model: a local HF sequence-classification model scoring (prompt, completion)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cohort.assets import resolve_builtin
from cohort.models.loading import resolve_device, resolve_dtype, resolve_model_source


def conversation_text(tokenizer, prompt: Any, completion: str) -> str:
    """prompt + completion as the reward model reads them: chat-formatted when the prompt is a message list."""
    if isinstance(prompt, str):
        return prompt + completion
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the prompt is a list of chat messages but the reward model's tokenizer has no chat template")
    messages = [dict(m) for m in prompt] + [{"role": "assistant", "content": completion}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


class RewardModelReward:
    """Reward = the score a sequence-classification model gives each (prompt, completion), in batches.

    With one output label the raw logit is the reward (the usual reward-model head); with several,
    ``label`` picks the class whose probability is the reward.
    """

    def __init__(
        self,
        path: str,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "float32",
        max_length: int | None = None,
        label: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"reward_model: batch_size must be >= 1, got {batch_size}")
        source = resolve_model_source(resolve_builtin(path), what="model")
        self.device = resolve_device(device)
        from transformers import (  # on first use: loading transformers costs ~1 s
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        self.model = AutoModelForSequenceClassification.from_pretrained(source, dtype=resolve_dtype(dtype)).to(self.device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        labels = self.model.config.num_labels
        if label is None and labels != 1:
            raise ValueError(f"reward_model {path!r} has {labels} output labels; set 'label' to the class whose probability is the reward")
        if label is not None and not 0 <= label < labels:
            raise ValueError(f"reward_model: label must be in [0, {labels}), got {label}")
        self.label = label
        self.batch_size = batch_size
        self.max_length = max_length
        self.__name__ = "reward_model"

    @torch.inference_mode()
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.float()  # [b, num_labels]
            values = logits[:, 0] if self.label is None else logits.softmax(-1)[:, self.label]  # [b]
            scores.extend(values.tolist())
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float]:
        texts = [conversation_text(self.tokenizer, p, c) for p, c in zip(prompts, completions)]
        return self.score_texts(texts)
