"""The run directory: a public contract (docs/design.md, "The run directory") that the trainer
writes and tools and users read: config.yaml, metrics.jsonl, completions.jsonl, run.log,
checkpoints/step-N/, final/, eval_<label>.json(l), report.html.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.pt"
DERIVED_DIRS = ("offline", "iterations", "wandb", "mlruns")
"""Subdirectories a run derives from its config (cached samples, per-iteration models); an
overwritten run loses them with the rest."""


class RunDirectoryError(ValueError):
    """The output directory cannot be used as asked (it holds a run and neither resume nor overwrite is set)."""


@dataclass(frozen=True)
class RunDirectory:
    """Paths of a run directory, and how a run starts in one (fresh, resumed, or overwritten)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def completions(self) -> Path:
        return self.root / "completions.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def eval_curve(self) -> Path:
        """Periodic held-out evaluations (train.eval_every): one JSON object per evaluated step."""
        return self.root / "eval_curve.jsonl"

    def eval_summary(self, label: str) -> Path:
        return self.root / f"eval_{label}.json"

    def eval_problems(self, label: str) -> Path:
        return self.root / f"eval_{label}.jsonl"

    def holds_a_run(self) -> bool:
        return self.metrics.exists() or self.checkpoints.exists() or self.final.exists()

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending (temporary directories are ignored)."""
        if not self.checkpoints.is_dir():
            return []
        steps = []
        for entry in self.checkpoints.iterdir():
            match = CHECKPOINT_NAME.match(entry.name)
            if match and (entry / TRAINER_STATE).is_file():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_checkpoint(self) -> Path | None:
        steps = self.checkpoint_steps()
        return self.checkpoints / f"step-{steps[-1]}" if steps else None

    def prepare(self, *, resume: bool, overwrite: bool) -> Path | None:
        """Create the directory; return the checkpoint to resume from (None: fresh start).

        A directory that already holds a run is never overwritten silently.
        """
        if resume:
            latest = self.latest_checkpoint()
            if latest is None:
                if self.holds_a_run():
                    raise RunDirectoryError(
                        f"train.resume=true but {self.root} holds no complete checkpoint to resume from"
                    )
                self.root.mkdir(parents=True, exist_ok=True)
                return None
            remove_temporary_dirs(self.checkpoints)
            remove_temporary_dirs(self.root)
            return latest
        if self.holds_a_run():
            if not overwrite:
                raise RunDirectoryError(
                    f"{self.root} already holds a run; pass train.resume=true to continue it, "
                    "train.overwrite=true to start afresh there, or another train.out_dir"
                )
            for child in (self.checkpoints, self.final, *(self.root / name for name in DERIVED_DIRS)):
                shutil.rmtree(child, ignore_errors=True)
            for child in self.root.iterdir():
                if child.is_file():
                    child.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        return None


def remove_temporary_dirs(parent: Path) -> None:
    """Delete leftovers of interrupted atomic writes (hidden ``.tmp-*`` directories)."""
    if parent.is_dir():
        for entry in parent.iterdir():
            if entry.name.startswith(".tmp-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
