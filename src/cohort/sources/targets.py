"""SFT's data source: (prompt, target) rows of the dataset, the target written by a human (or a teacher)."""

from __future__ import annotations

from cohort.sources.scored_batch import ScoredBatch, no_scores
from cohort.config import Config
from cohort.data.files import DatasetError
from cohort.data.tasks import Task, row_columns, rows_at
from cohort.sources.base import SourcePieces, StepTimer
from cohort.sources.stream import ExampleStream, completion_tokens, default_batch_size

TARGET_COLUMNS = ("target", "completion")


def target_column(config: Config, task: Task) -> str:
    """sft.target_column, else the first of 'target' / 'completion' the rows have, else the answer column."""
    columns = task.train.column_names
    if config.sft.target_column is not None:
        if config.sft.target_column not in columns:
            raise DatasetError(
                f"sft.target_column={config.sft.target_column!r}: the training rows have no such column "
                f"(columns: {', '.join(columns)})"
            )
        return config.sft.target_column
    return next((name for name in TARGET_COLUMNS if name in columns), task.answer_column)


def check_targets(config: Config, task: Task) -> None:
    """Every training row has a non-empty string (or number) target; the error names the row."""
    column = target_column(config, task)
    if column not in task.train.column_names:
        raise DatasetError(f"method sft needs targets: no column {column!r} in the training rows "
                           f"(set sft.target_column; columns: {', '.join(task.train.column_names)})")
    for number, value in enumerate(task.train[column], start=1):
        if value is None or isinstance(value, (dict, list)) or not str(value).strip():
            raise DatasetError(f"{task.name}: row {number}, column {column!r}: method sft needs a non-empty target, got {value!r}")


class DatasetTargets(ExampleStream):
    """Each step: ``batch_size`` dataset rows, each with its target as the completion (G = 1)."""

    def __init__(self, pieces: SourcePieces) -> None:
        super().__init__(pieces, default_batch_size(pieces))
        self.column = target_column(pieces.config, pieces.task)

    def load(self) -> int:
        return len(self.pieces.task.train)

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        rows = rows_at(self.pieces.task.train, indices)
        texts = [str(row[self.column]) for row in rows]
        tokenizer = self.pieces.tokenizer
        completions = [completion_tokens(tokenizer, text, f"row {i + 1}, column {self.column!r}") for i, text in zip(indices, texts)]
        prompts, rollout = self.rollout(rows, completions, 1)
        return ScoredBatch(rollout, prompts, row_columns(rows), texts, no_scores(len(texts)),
                           sampled_groups=len(rows), extras={"sft/dataset_size": float(self.sampler.num_rows)})
