"""The report's figures: metric panels over steps and the before/after evaluation curve, drawn with
matplotlib's Agg renderer into PNGs the page inlines; and the number formats the page uses.
``new_axes`` and ``png`` are public so other pages (``cohort reproduce``) draw alike."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from cohort.monitoring.panels import REWARD_FUNCTION_KEY, Panel, run_panels, scored

SMALL_SERIES = 40
"""Series with at most this many points get markers (a single point draws no line)."""
FIGURE_SIZE_IN = (6.4, 3.0)
FIGURE_DPI = 100  # a panel PNG is 640 x 300 pixels
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def format_number(value: Any, signed: bool = False) -> str:
    """A number as the page shows it: 4 significant digits, '—' for missing/null/non-finite.

    >>> format_number(0.8333333), format_number(12), format_number(None), format_number(0.25, signed=True)
    ('0.8333', '12', '—', '+0.25')
    """
    number = finite_number(value)
    if number is None:
        return "—"
    if isinstance(value, int) and not signed:
        return str(value)
    return f"{number:+.4g}" if signed else f"{number:.4g}"


def format_duration(seconds: float | None) -> str:
    """Seconds as '42.0 s', '3 min 05 s' or '2 h 07 min'."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metric_columns(metrics: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every metric key as a float column over the steps (NaN where a step has no finite number)."""
    keys = dict.fromkeys(key for record in metrics for key in record)
    columns = {}
    for key in keys:
        values = [finite_number(record.get(key)) for record in metrics]
        columns[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)  # [S]
    return columns


def last_finite(column: np.ndarray | None) -> float | None:
    """The last finite value of a column (None when there is none)."""
    if column is None:
        return None
    finite = column[np.isfinite(column)]
    return float(finite[-1]) if finite.size else None


@dataclass(frozen=True)
class Plot:
    """A rendered panel: a PNG and what the page says about it."""

    id: str
    title: str
    alt: str
    metrics: tuple[str, ...]
    png: bytes
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        """The PNG inline, for an ``<img src>`` that needs no file or network."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Omission:
    """A metric the page does not plot, and why."""

    key: str
    reason: str


def new_axes() -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def png(figure: Figure) -> tuple[bytes, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    width, height = (round(v * FIGURE_DPI) for v in figure.get_size_inches())
    return buffer.getvalue(), width, height


def _line(axes: Any, steps: np.ndarray, values: np.ndarray, label: str, color: str, **style: Any) -> None:
    marker = "o" if np.isfinite(values).sum() <= SMALL_SERIES else None
    axes.plot(steps, values, label=label, color=color, marker=marker, markersize=3, linewidth=1.4, **style)


def _iteration_boundaries(steps: np.ndarray, columns: dict[str, np.ndarray]) -> list[float]:
    """Steps after which iterative RL moved to its next iteration (where the ``iteration`` metric changes)."""
    iteration = columns.get("iteration")
    if iteration is None:
        return []
    changes = np.flatnonzero(np.diff(iteration) > 0)  # index i: iteration rose between steps i and i+1
    return [float(steps[i]) + 0.5 for i in changes]


def render_panel(panel: Panel, steps: np.ndarray, columns: dict[str, np.ndarray]) -> Plot | None:
    """Draw one panel from the metric columns; None when none of its keys has a finite value."""
    present = [(key, label) for key, label in panel.series if key in columns and np.isfinite(columns[key]).any()]
    if not present or (panel.style == "band" and present[0][0] != panel.series[0][0]):
        return None
    figure, axes = new_axes()
    if panel.style == "band":
        (mean_key, mean_label), *rest = present
        mean = columns[mean_key]
        _line(axes, steps, mean, mean_label, COLORS[0])
        if rest:
            std = columns[rest[0][0]]
            axes.fill_between(steps, mean - std, mean + std, color=COLORS[0], alpha=0.2, linewidth=0, label="± std")
    elif panel.style == "stacked":
        total_key = panel.series[-1][0]
        parts = [(key, label) for key, label in present if key != total_key]
        if parts:
            stack = np.nan_to_num(np.stack([columns[key] for key, _ in parts]))  # [parts, S]
            axes.stackplot(steps, stack, labels=[label for _, label in parts], colors=COLORS[: len(parts)], alpha=0.75)
        if any(key == total_key for key, _ in present):
            _line(axes, steps, columns[total_key], dict(panel.series)[total_key], "black", linestyle="--")
    else:
        for index, (key, label) in enumerate(present):
            _line(axes, steps, columns[key], label, COLORS[index % len(COLORS)])
    for boundary in _iteration_boundaries(steps, columns):
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_title(panel.title, fontsize=11)
    axes.set_xlabel("step")
    axes.set_ylabel(panel.ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(present) > 1 or panel.style != "lines":
        axes.legend(fontsize=8, loc="best")
    image, width, height = png(figure)
    last = ", ".join(f"{label} {format_number(last_finite(columns[key]))}" for key, label in present)
    alt = f"{panel.title} over steps {int(steps[0])}–{int(steps[-1])}; last values: {last}"
    return Plot(panel.id, panel.title, alt, tuple(key for key, _ in present), image, width, height)


def render_metric_plots(metrics: list[dict[str, Any]], method: Any = None) -> tuple[list[Plot], list[Omission]]:
    """All panels of a run of ``method`` (a method class; None: unknown) that have data, and the expected
    metrics that were left out (and why)."""
    columns = metric_columns(metrics)
    steps = columns.pop("step")  # [S]
    plots, omissions = [], []
    for panel in run_panels(columns, method):
        plot = render_panel(panel, steps, columns)
        if plot is not None:
            plots.append(plot)
        drawn = set(plot.metrics) if plot else set()
        for key, _ in panel.series:
            if key in drawn:
                continue
            reason = "not recorded in this run" if key not in columns else "recorded, but every value is null"
            if plot is None and panel.style == "band" and key != panel.series[0][0]:
                reason = f"not drawn without {panel.series[0][0]}"
            omissions.append(Omission(key, reason))
    if not any(REWARD_FUNCTION_KEY.match(key) for key in columns) and scored(method):
        omissions.append(Omission("reward/<name>/mean", "no per-function rewards recorded"))
    return plots, omissions


def _curve(summary: dict[str, Any] | None, name: str) -> list[tuple[int, float]]:
    """The (k, value) points of ``pass_at_k`` or ``maj_at_k`` in an eval summary, sorted by k."""
    table = (summary or {}).get(name)
    if not isinstance(table, dict):
        return []
    points = []
    for k, value in table.items():
        number = finite_number(value)
        if str(k).isdigit() and int(k) >= 1 and number is not None:
            points.append((int(k), number))
    return sorted(points)


def render_eval_plot(before: dict[str, Any] | None, after: dict[str, Any] | None) -> Plot | None:
    """pass@k and maj@k against k (log2 axis), before and after training; None without eval data."""
    curves = [
        (label, name, summary)
        for label, summary in (("before", before), ("after", after))
        for name in ("pass_at_k", "maj_at_k")
    ]
    drawn = [(label, name, points) for label, name, summary in curves if (points := _curve(summary, name))]
    if not drawn:
        return None
    figure, axes = new_axes()
    colors = {"before": COLORS[7], "after": COLORS[0]}
    for label, name, points in drawn:
        ks, values = zip(*points)
        kind = "pass@k" if name == "pass_at_k" else "maj@k"
        style = "-" if name == "pass_at_k" else "--"
        axes.plot(ks, values, style, marker="o", markersize=4, color=colors[label], label=f"{kind} {label}")
    all_ks = sorted({k for _, _, points in drawn for k, _ in points})
    axes.set_xscale("log", base=2)
    axes.set_xlim(all_ks[0] / 1.5, all_ks[-1] * 1.5)
    axes.xaxis.set_major_locator(FixedLocator(all_ks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([str(k) for k in all_ks])
    axes.set_ylim(-0.02, 1.02)
    axes.set_title("Held-out pass@k and maj@k", fontsize=11)
    axes.set_xlabel("k (samples per problem)")
    axes.set_ylabel("fraction of problems")
    axes.legend(fontsize=8, loc="best")
    image, width, height = png(figure)
    described = "; ".join(
        f"{'pass' if name == 'pass_at_k' else 'maj'}@k {label}: "
        + ", ".join(f"k={k} {format_number(v)}" for k, v in points)
        for label, name, points in drawn
    )
    return Plot("eval-pass-maj", "Held-out pass@k and maj@k", described, ("pass_at_k", "maj_at_k"), image, width, height)
