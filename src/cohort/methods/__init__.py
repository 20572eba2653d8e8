"""The training methods of the unified paradigm, one file and one registered class each
(``algorithm.method``; ``cohort methods`` lists them with their data source and coefficient).

A new method is one file that declares a :class:`~cohort.methods.base.Method` subclass with
``@register_method``, plus its import below.
"""

from cohort.methods import dpo, grpo, ipo, online_rft, ppo, rft, sft  # noqa: F401  (each registers its method)
from cohort.methods.base import Method, MethodContext, TrainingSignal
from cohort.methods.registry import METHODS, check_config, method_class, register_method

__all__ = ["METHODS", "Method", "MethodContext", "TrainingSignal", "check_config", "method_class", "register_method"]
