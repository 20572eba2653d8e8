"""A run at a glance: one self-contained ``report.html`` built from a run directory.

The page needs no network to view: inline CSS, plots as PNG data URIs drawn with matplotlib's Agg
renderer, no scripts and no external fonts. It reads only the run directory contract (docs/design.md,
"The run directory"): ``metrics.jsonl`` (required), and ``config.yaml``, ``completions.jsonl``,
``eval_before.json`` and ``eval_after.json`` when they exist. Metrics a run did not record are
skipped and listed on the page, never an error. All text from the run (completions are untrusted
model output) is HTML-escaped by the template engine.

    write_report(Path("runs/demo"))  # -> runs/demo/report.html
"""

from cohort.report.figures import (
           COLORS,
           Omission,
           Plot,
           format_number,
           new_axes,
           png,
           render_metric_plots,
)
from cohort.report.page import build_page, render_html, write_report
from cohort.report.run_data import (
           ReportError,
           RunData,
           load_run,
           read_eval_summary,
           read_iterations,
           read_metrics,
)

__all__ = ["COLORS", "Omission", "Plot", "ReportError", "RunData", "build_page", "format_number", "load_run", "new_axes",
           "png", "read_eval_summary", "read_iterations", "read_metrics", "render_html", "render_metric_plots",
           "write_report"]
