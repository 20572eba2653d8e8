"""A seeded, resumable stream of examples (dataset rows, kept samples, pairs) cut into step batches."""

from __future__ import annotations

from typing import Any

import torch

from cohort.data.sampler import PromptSampler
from cohort.rollout.batch import rollout_from_tokens
from cohort.sources.base import SourcePieces, StepTimer
from cohort.sources.scored_batch import ScoredBatch


class MethodDataError(ValueError):
    """A method cannot get the data it needs (no targets, no pairs, no correct sample)."""


def completion_tokens(tokenizer: Any, text: str, where: str) -> list[int]:
    """A completion's token ids as the model would write it: the text, then EOS."""
    if not isinstance(text, str) or not text.strip():
        raise MethodDataError(f"{where}: expected a non-empty completion text, got {text!r}")
    if tokenizer.eos_token_id is None:
        raise MethodDataError("the tokenizer declares no EOS token, so a target cannot be ended")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [int(tokenizer.eos_token_id)]


class ExampleStream:
    """Examples ``0..n-1`` drawn in a fresh seeded order each epoch, ``batch_size`` per step.

    Subclasses fill ``self.count`` in :meth:`load` (called once, lazily) and build a batch from a
    list of example indices in :meth:`build`. The position is saved and restored exactly, also when
    ``load_state_dict`` comes before the examples exist (resume).
    """

    def __init__(self, pieces: SourcePieces, batch_size: int) -> None:
        self.pieces = pieces
        self.batch_size = batch_size
        self.sampler: PromptSampler | None = None
        self._pending: dict[str, Any] | None = None

    def load(self) -> int:
        """Make the examples available; return how many there are."""
        raise NotImplementedError

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        raise NotImplementedError

    def prepare(self) -> None:
        if self.sampler is not None:
            return
        count = self.load()
        self.sampler = PromptSampler(count, seed=self.pieces.config.train.seed, shuffle=self.pieces.config.data.shuffle)
        if self._pending is not None:
            self.sampler.load_state_dict(self._pending)
            self._pending = None

    def next_batch(self, timer: StepTimer) -> ScoredBatch:
        self.prepare()
        indices = self.sampler.next_indices(self.batch_size)  # the same global draw on every rank
        return self.build(indices[self.pieces.world.share(self.batch_size, "train.batch_size")], timer)

    def state_dict(self) -> dict[str, Any]:
        self.prepare()
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.sampler is None:
            self._pending = state["sampler"]
        else:
            self.sampler.load_state_dict(state["sampler"])

    def rollout(self, prompt_rows: list[dict[str, Any]], completion_ids: list[list[int]], group_size: int):
        """(prompts as given to rewards, Rollout) for rows and their ``group_size`` completions each."""
        sampler = self.pieces.sampler
        prompts = [sampler.renderer.prompt(row) for row in prompt_rows]
        device = next(sampler.policy.parameters()).device
        rollout = rollout_from_tokens(
            sampler.renderer.encode(prompts), completion_ids, group_size, sampler.tokenizer.pad_token_id, device=device
        )
        return prompts, rollout


def default_batch_size(pieces: SourcePieces, per_example: int = 1) -> int:
    """train.batch_size, else as many sequences as an online step (P x G), in examples of ``per_example`` sequences."""
    config = pieces.config
    if config.train.batch_size is not None:
        return config.train.batch_size
    return max(1, config.rollout.prompts_per_step * config.rollout.group_size // per_example)


def as_float_tensor(values: list[float | None]) -> torch.Tensor:
    """None -> NaN, float64. [N]"""
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64)
