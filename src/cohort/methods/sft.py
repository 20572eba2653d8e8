"""SFT (DeepSeekMath Eq. 6-7): dataset (prompt, target) rows, GC = 1: the token-mean NLL of the target."""

from __future__ import annotations

from dataclasses import dataclass

from cohort.config import Config
from cohort.data.files import DatasetError
from cohort.data.tasks import Task
from cohort.methods.base import TrainingSignal
from cohort.methods.coefficient import CoefficientMethod
from cohort.methods.registry import register_method
from cohort.rewards import NamedReward
from cohort.sources import DatasetTargets, ScoredBatch, SourcePieces

TARGET_COLUMNS = ("target", "completion")


@dataclass
class SFTConfig:
    target_column: str | None = None
    """The column holding each row's target completion; null = 'target', else 'completion', else data.answer_column."""


def target_column(config: Config, task: Task) -> str:
    """sft.target_column, else the first of 'target' / 'completion' the rows have, else the answer column."""
    columns = task.train.column_names
    chosen = config.sft.target_column
    if chosen is not None:
        if chosen not in columns:
            raise DatasetError(f"sft.target_column={chosen!r}: the training rows have no such column (columns: {', '.join(columns)})")
        return chosen
    return next((name for name in TARGET_COLUMNS if name in columns), task.answer_column)


@register_method
class SFT(CoefficientMethod):
    name = "sft"
    summary = "dataset (prompt, target) rows, token-mean NLL of the target (GC = 1)"
    samples = "dataset"
    scored = False
    config_section = ("sft", SFTConfig)
    reads = CoefficientMethod.reads | {"train.batch_size"}

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        """Every training row has a non-empty string (or number) target; the error names the row."""
        column = target_column(config, task)
        if column not in task.train.column_names:
            raise DatasetError(f"method sft needs targets: no column {column!r} in the training rows "
                               f"(set sft.target_column; columns: {', '.join(task.train.column_names)})")
        for number, value in enumerate(task.train[column], start=1):
            if value is None or isinstance(value, (dict, list)) or not str(value).strip():
                raise DatasetError(f"{task.name}: row {number}, column {column!r}: method sft needs a non-empty target, got {value!r}")

    def source(self, pieces: SourcePieces) -> DatasetTargets:
        return DatasetTargets(pieces, column=target_column(self.config, pieces.task))

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {**super().metrics(batch, signal, stats), "sft/dataset_size": batch.extras["dataset_size"]}
