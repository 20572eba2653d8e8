"""The report's plots, declared by whoever records their metrics.

The loop records what every method has (rewards, lengths, entropy, times, loss, gradient norms,
learning rate) and declares those panels here; a method declares the panels of its own metrics on
its class (``Method.panels``), reusing the shared ones below where two methods record the same
thing. The report draws the loop's panels around the method's and never asks which method ran.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Panel:
    """One plot of metrics over steps: which keys it draws (with legend labels) and how."""

    id: str
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]
    style: Literal["lines", "band", "stacked"] = "lines"
    """lines: one line per key; band: first key ± second key (mean ± std); stacked: stacked areas
    of all keys but the last, which is drawn as a line on top (parts of a total)."""
    applies: Callable[[Any], bool] | None = None
    """Whether a run of the given method class records these metrics (None: every run); for a
    method it does not apply to, the panel is neither drawn nor are its metrics listed as missing."""


def scored(method: Any) -> bool:
    """The run's rewards score the method's samples."""
    return method is None or method.scored


def online(method: Any) -> bool:
    """The method samples the current policy at every step."""
    return method is None or method.samples == "online"


REWARD_FUNCTION_KEY = re.compile(r"^reward/(?P<name>.+)/mean$")
GRAD_NORM_KEY = re.compile(r"^(?P<name>.+)/grad_norm$")
TIME_PARTS = (
    ("time/rollout_s", "rollout"), ("time/reward_s", "reward"), ("time/logprob_s", "log-probs"), ("time/train_s", "train"),
)

# --- shared by several methods --------------------------------------------------------------------

KL = Panel("kl", "KL to the reference model", "KL", (("kl", "kl"),))
CLIP_FRACTION = Panel("clip-frac", "Clipped fraction of tokens", "fraction",
                      (("clip_frac/low", "low (ratio < 1-ε)"), ("clip_frac/high", "high (ratio > 1+ε)")))
NLL = Panel("nll", "Negative log-likelihood of the kept / target tokens", "nats / token", (("nll", "nll"),))


# --- the loop's -------------------------------------------------------------------------------------


def score_panels(keys: Iterable[str]) -> list[Panel]:
    """The panels of the rewards, drawn before the method's (reward functions found among ``keys``)."""
    functions = tuple((key, match["name"]) for key in sorted(keys) if (match := REWARD_FUNCTION_KEY.match(key)))
    return [
        Panel("reward", "Reward (mean ± std over the batch)", "reward", (("reward/mean", "mean"), ("reward/std", "std")),
              "band", scored),
        Panel("reward-functions", "Reward by function (mean)", "reward", functions, applies=scored),
        Panel("accuracy", "Accuracy (correct samples)", "fraction", (("accuracy", "accuracy"),), applies=scored),
    ]


def shape_and_time_panels(keys: Iterable[str]) -> list[Panel]:
    """The panels of the samples' shape, the update and the time, drawn after the method's."""
    models = tuple((key, f"{match['name']} model") for key in sorted(keys) if (match := GRAD_NORM_KEY.match(key)))
    return [
        Panel("entropy", "Policy entropy", "nats / token", (("entropy", "entropy"),)),
        Panel("completion-len", "Completion length", "tokens", (("completion_len/mean", "mean"), ("completion_len/max", "max"))),
        Panel("length-by-correctness", "Completion length of correct and wrong samples", "tokens",
              (("completion_len/correct_mean", "correct"), ("completion_len/wrong_mean", "wrong")), applies=scored),
        Panel("truncated-frac", "Truncated completions (hit max_new_tokens)", "fraction", (("truncated_frac", "truncated"),),
              applies=online),
        Panel("step-time", "Step time by phase", "seconds", (*TIME_PARTS, ("time/step_s", "step total")), "stacked"),
        Panel("tokens-per-s", "Throughput", "completion tokens / s", (("tokens_per_s", "tokens/s"),)),
        Panel("loss", "Loss", "loss", (("loss", "loss"),)),
        Panel("grad-norm", "Gradient norm (before clipping)", "norm", (("grad_norm", "policy"), *models)),
        Panel("lr", "Learning rate", "lr", (("lr", "lr"),)),
    ]


def run_panels(keys: Iterable[str], method: Any = None) -> list[Panel]:
    """The panels of a run of ``method`` (a method class; None: a run of unknown method), in page order:
    the rewards, the method's own, then the samples' shape, the update and the time."""
    keys = set(keys)
    panels = [*score_panels(keys), *(method.panels if method is not None else ()), *shape_and_time_panels(keys)]
    return [panel for panel in panels if panel.applies is None or panel.applies(method)]
