"""SFT's data source: (prompt, target) rows of the dataset, the target written by a human (or a teacher)."""

from __future__ import annotations

from cohort.data.tasks import row_columns, rows_at
from cohort.sources.base import SourcePieces, StepTimer
from cohort.sources.scored_batch import ScoredBatch, no_scores
from cohort.sources.stream import ExampleStream, completion_tokens, default_batch_size


class DatasetTargets(ExampleStream):
    """Each step: ``batch_size`` dataset rows, each with the text of its ``column`` as the completion (G = 1)."""

    def __init__(self, pieces: SourcePieces, *, column: str) -> None:
        super().__init__(pieces, default_batch_size(pieces))
        self.column = column

    def load(self) -> int:
        return len(self.pieces.task.train)

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        rows = rows_at(self.pieces.task.train, indices)
        texts = [str(row[self.column]) for row in rows]
        tokenizer = self.pieces.sampler.tokenizer
        completions = [completion_tokens(tokenizer, text, f"row {i + 1}, column {self.column!r}") for i, text in zip(indices, texts)]
        prompts, rollout = self.rollout(rows, completions, 1)
        return ScoredBatch(rollout, prompts, row_columns(rows), texts, no_scores(len(texts)),
                           sampled_groups=len(rows), extras={"dataset_size": float(self.sampler.num_rows)})
