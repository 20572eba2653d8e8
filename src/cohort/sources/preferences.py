"""Pairs from a preference file: each training row has a prompt, a chosen and a rejected completion."""

from __future__ import annotations

from cohort.data.files import DatasetError
from cohort.data.tasks import Task, row_columns, rows_at
from cohort.sources.base import SourcePieces, StepTimer
from cohort.sources.scored_batch import ScoredBatch, no_scores
from cohort.sources.stream import ExampleStream, completion_tokens, default_batch_size


def check_preference_columns(task: Task, columns: tuple[str, str], setting: str) -> None:
    """The training rows have the chosen and rejected ``columns``, each a non-empty string; errors name
    the row (``setting`` names the config option that asked for them)."""
    for column in columns:
        if column not in task.train.column_names:
            raise DatasetError(f"{setting} needs a column {column!r} in the training rows "
                               f"(columns: {', '.join(task.train.column_names)})")
        for number, value in enumerate(task.train[column], start=1):
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"{task.name}: row {number}, column {column!r}: expected a non-empty completion, got {value!r}")


class PreferencePairs(ExampleStream):
    """Each step: ``batch_size`` rows as (chosen, rejected) groups of two, from the (chosen, rejected) ``columns``."""

    def __init__(self, pieces: SourcePieces, *, columns: tuple[str, str]) -> None:
        super().__init__(pieces, default_batch_size(pieces, per_example=2))
        self.columns = columns

    def load(self) -> int:
        return len(self.pieces.task.train)

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        rows = rows_at(self.pieces.task.train, indices)
        texts = [row[column] for row in rows for column in self.columns]
        completions = [completion_tokens(self.pieces.sampler.tokenizer, text, "preference row") for text in texts]
        prompts, rollout = self.rollout(rows, completions, 2)
        batch = ScoredBatch(rollout, prompts, row_columns(rows), texts, no_scores(len(texts)), sampled_groups=len(rows))
        batch.extras = {"dataset_pairs": float(self.sampler.num_rows)}
        return batch
