"""Where a method's samples come from (DeepSeekMath's "data source"): dataset rows, samples of the
initial policy drawn once, or online rollouts of the current policy."""

from cohort.sources.base import (
    PolicySampler,
    ScoringStage,
    Source,
    SourcePieces,
    StepTimer,
    sample_and_score,
)
from cohort.sources.offline import OfflineSamples, RejectionSampledRows, SamplePairs
from cohort.sources.online import OnlineRollouts
from cohort.sources.preferences import PreferencePairs, check_preference_columns
from cohort.sources.scored_batch import ScoredBatch
from cohort.sources.stream import MethodDataError
from cohort.sources.targets import DatasetTargets

__all__ = [
    "DatasetTargets",
    "MethodDataError",
    "OfflineSamples",
    "OnlineRollouts",
    "PolicySampler",
    "PreferencePairs",
    "RejectionSampledRows",
    "SamplePairs",
    "ScoredBatch",
    "ScoringStage",
    "Source",
    "SourcePieces",
    "StepTimer",
    "check_preference_columns",
    "sample_and_score",
]
