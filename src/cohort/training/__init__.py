"""Training: the loop's spine (:mod:`.trainer`), the step metrics every method shares (:mod:`.metrics`),
checkpoints and exact resume (:mod:`.checkpoint`), graceful stops (:mod:`.stopping`), the checks that
need no weights (:mod:`.preflight`) and DeepSeekMath's iterative RL around the loop (:mod:`.iterative`).

``Trainer`` is imported on first use, so that ``cohort.training.preflight`` alone stays light.
"""

from __future__ import annotations

__all__ = ["Trainer"]


def __getattr__(name: str):
    if name == "Trainer":
        from cohort.training.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'cohort.training' has no attribute {name!r}")
