"""RFT (DeepSeekMath Eq. 8-10): samples of the initial policy drawn once; the correct ones,
deduplicated per prompt, are fine-tuned on with the SFT loss (GC = I(o correct))."""

from __future__ import annotations

from cohort.config import Config
from cohort.data.tasks import Task
from cohort.methods.base import TrainingSignal
from cohort.methods.checks import require_correctness
from cohort.methods.coefficient import CoefficientMethod
from cohort.methods.registry import register_method
from cohort.monitoring.panels import Panel
from cohort.rewards import NamedReward
from cohort.sources import (
    OfflineSamples,
    RejectionSampledRows,
    ScoredBatch,
    SourcePieces,
)

KEPT = Panel("kept-frac", "Samples kept (correct, deduplicated)", "fraction", (("rft/kept_frac", "kept"),))


@register_method
class RFT(CoefficientMethod):
    name = "rft"
    summary = "samples of the initial policy drawn once; fine-tune on the correct ones, deduplicated (GC = I(o))"
    samples = "offline"
    reads = CoefficientMethod.reads | {"offline.*", "train.batch_size"}
    panels = (KEPT, *CoefficientMethod.panels)

    @classmethod
    def check_data(cls, config: Config, task: Task, rewards: list[NamedReward]) -> None:
        require_correctness(cls.name, rewards)

    def source(self, pieces: SourcePieces) -> RejectionSampledRows:
        return RejectionSampledRows(pieces, OfflineSamples(pieces))

    def metrics(self, batch: ScoredBatch, signal: TrainingSignal, stats: dict[str, float]) -> dict[str, float]:
        return {**super().metrics(batch, signal, stats), "rft/dataset_size": batch.extras["dataset_size"],
                "rft/kept_frac": batch.extras["kept_frac"]}
