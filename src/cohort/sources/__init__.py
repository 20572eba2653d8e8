"""Where a method's samples come from (DeepSeekMath's "data source"): dataset rows, samples of the
initial policy drawn once, or online rollouts of the current policy."""

from cohort.sources.base import Source, SourcePieces, StepTimer, sample_and_score
from cohort.sources.offline import OfflineSamples, RejectionSampledRows, SamplePairs
from cohort.sources.online import OnlineRollouts
from cohort.sources.preferences import PreferencePairs, check_preference_columns
from cohort.sources.stream import MethodDataError
from cohort.sources.targets import DatasetTargets, check_targets, target_column

__all__ = [
    "DatasetTargets",
    "MethodDataError",
    "OfflineSamples",
    "OnlineRollouts",
    "PreferencePairs",
    "RejectionSampledRows",
    "SamplePairs",
    "Source",
    "SourcePieces",
    "StepTimer",
    "check_preference_columns",
    "check_targets",
    "sample_and_score",
    "target_column",
]
