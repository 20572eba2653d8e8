"""Training: the loop's spine (:mod:`.trainer`), the step metrics every method shares (:mod:`.metrics`),
checkpoints and exact resume (:mod:`.checkpoint`), graceful stops (:mod:`.stopping`) and DeepSeekMath's
iterative RL around the loop (:mod:`.iterative`)."""

from cohort.training.trainer import Trainer

__all__ = ["Trainer"]
