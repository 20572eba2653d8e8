"""The reproduction's figures (matplotlib, Agg), as the report's Plot values: PNG bytes inline."""

from __future__ import annotations

import math
import statistics
import textwrap
from typing import Any

import numpy as np

from cohort.report import COLORS, Plot, new_axes, png

PAPER = "DeepSeekMath"


def _band(axes: Any, xs: list[float], points: list[dict[str, Any]], label: str, color: str) -> None:
    """A mean line with its 95% interval over seeds as a shaded band."""
    mean = np.array([p["mean"] for p in points], dtype=float)
    low = np.array([p["low"] for p in points], dtype=float)
    high = np.array([p["high"] for p in points], dtype=float)
    axes.plot(xs, mean, label=label, color=color, marker="o", markersize=3, linewidth=1.4)
    if np.isfinite(low).any():
        axes.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)


def _plot(identifier: str, title: str, figure: Any, axes: Any, alt: str) -> Plot:
    axes.set_title(textwrap.fill(title, 72), fontsize=10)  # long titles wrap instead of running off the figure
    axes.legend(fontsize=8, loc="best")
    image, width, height = png(figure)
    return Plot(identifier, title, alt, (), image, width, height)


def curves(identifier: str, title: str, arms: dict[str, Any], names: list[str], boundaries: list[float] = ()) -> Plot:
    """Held-out pass@1 against training step, one band per arm."""
    figure, axes = new_axes()
    for index, name in enumerate(names):
        points = arms[name]["curve"]
        _band(axes, [p["step"] for p in points], points, arms[name]["label"], COLORS[index % len(COLORS)])
    for boundary in boundaries:
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("training step")
    axes.set_ylabel("held-out pass@1")
    last = ", ".join(f"{arms[n]['label']} {arms[n]['final_pass1']['mean']:.3f}" for n in names)
    return _plot(identifier, title, figure, axes, f"{title}; final pass@1: {last}")


def pass_and_maj(figure7: dict[str, Any]) -> Plot:
    """Figure 7: pass@K and maj@K against K, before RL and after (mean over seeds)."""
    figure, axes = new_axes()
    befores = [v for label, v in figure7.items() if label.startswith("before")]
    afters = [v for label, v in figure7.items() if label.startswith("after")]
    ks = sorted(int(k) for k in befores[0]["pass_at_k"])
    for index, (metric, name) in enumerate((("pass_at_k", "pass@K"), ("maj_at_k", "maj@K"))):
        color = COLORS[index]
        for runs, style, when in ((befores, "--", "before RL"), (afters, "-", "after GRPO")):
            axes.plot(ks, [statistics.fmean(r[metric][str(k)] for r in runs) for k in ks], color=color, linestyle=style,
                      marker="o", markersize=3, label=f"{name} {when}")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_xlabel("K (samples per problem)")
    axes.set_ylabel("held-out accuracy")
    return _plot("figure7", "Pass@K and Maj@K before and after RL (Figure 7)", figure, axes,
                 "pass@K and maj@K for K = " + ", ".join(map(str, ks)) + " before and after GRPO")


def lengths(arms: dict[str, Any], names: list[str]) -> Plot:
    """Mean length of wrong (solid) and correct (dotted) samples over training, per arm (mean over seeds)."""
    figure, axes = new_axes()
    for index, name in enumerate(names):
        runs = list(arms[name]["runs"].values())
        steps = [m["step"] for m in runs[0]["metrics"]]
        for key, style in (("completion_len/wrong_mean", "-"), ("completion_len/correct_mean", ":")):
            series = []
            for i in range(len(steps)):
                values = [r["metrics"][i].get(key) for r in runs if i < len(r["metrics"])]
                values = [v for v in values if v is not None and math.isfinite(v)]
                series.append(statistics.fmean(values) if values else float("nan"))
            kind = "wrong" if "wrong" in key else "correct"
            axes.plot(steps, series, linestyle=style, color=COLORS[index], linewidth=1.3, label=f"{arms[name]['label']}: {kind}")
    axes.set_xlabel("training step")
    axes.set_ylabel("completion length (tokens)")
    return _plot("length-bias", "Length of correct and wrong samples: GRPO vs Dr. GRPO", figure, axes,
                 "mean completion length of correct and wrong samples over training for GRPO and Dr. GRPO")


def finals(arms: dict[str, Any]) -> Plot:
    """Final held-out pass@1 of every arm with its 95% interval."""
    figure, axes = new_axes()
    names = list(arms)
    means = [arms[n]["final_pass1"]["mean"] for n in names]
    errors = [[m - arms[n]["final_pass1"]["low"] if math.isfinite(arms[n]["final_pass1"]["low"]) else 0 for n, m in zip(names, means)],
              [arms[n]["final_pass1"]["high"] - m if math.isfinite(arms[n]["final_pass1"]["high"]) else 0 for n, m in zip(names, means)]]
    axes.bar(range(len(names)), means, yerr=errors, color=COLORS[0], alpha=0.8, capsize=3, label="final pass@1 (95% CI)")
    axes.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("held-out pass@1")
    return _plot("finals", "Final held-out pass@1 by method (the unified paradigm)", figure, axes,
                 "final held-out pass@1 of " + ", ".join(f"{n} {m:.3f}" for n, m in zip(names, means)))
