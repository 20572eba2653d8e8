"""The run's record of each step: metrics.jsonl and completions.jsonl, mirrored to the experiment trackers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cohort.monitoring.trackers import (
    TrackedRun,
    close_trackers,
    finite_scalars,
    open_trackers,
    tracker_names,
)
from cohort.records import dumps

if TYPE_CHECKING:
    from cohort.config import Config
    from cohort.run_directory import RunDirectory


class MetricsWriter:
    """Appends per-step metrics to metrics.jsonl and sends them to the run's trackers (TensorBoard, W&B,
    MLflow, trackio: see cohort.monitoring.trackers); sampled completions go to completions.jsonl.

    metrics.jsonl is written first and is the record: the trackers get its finite numbers under its
    names, and a tracker that fails is reported once and never stops training.
    """

    def __init__(self, run_dir: RunDirectory, config: Config, start_step: int = 0) -> None:
        self.metrics_path = run_dir.metrics
        self.completions_path = run_dir.completions
        self.run = TrackedRun.from_config(config, run_dir.root, start_step)
        self.trackers = open_trackers(tracker_names(config.log), self.run)

    @staticmethod
    def check_trackers(config: Config) -> tuple[str, ...]:
        """The trackers ``config.log`` asks for; an unknown name or a missing library raises a TrackerError
        now (the trainer calls this before it loads anything)."""
        return tracker_names(config.log)

    def write_step(self, metrics: Mapping[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(dumps(metrics) + "\n")
        scalars, step = finite_scalars(metrics), int(metrics["step"])
        for tracker in self.trackers:
            tracker.log_metrics(scalars, step)

    def write_completions(self, records: Sequence[Mapping[str, Any]]) -> None:
        with self.completions_path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(dumps(record) + "\n")

    def write_text(self, tag: str, text: str, step: int) -> None:
        for tracker in self.trackers:
            tracker.log_text(tag, text, step)

    def close(self) -> None:
        close_trackers(self.trackers)
        self.trackers = []
