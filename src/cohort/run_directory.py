"""The run directory: a public contract (docs/design.md, "The run directory") that the trainer
writes and tools and users read: config.yaml, metrics.jsonl, completions.jsonl, run.log,
checkpoints/step-N/, final/, eval_<label>.json(l), report.html.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.pt"
DERIVED_DIRS = ("offline", "iterations", "configs", "eval", "wandb", "mlruns")
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

    def prepare(self, *, resume: bool, overwrite: bool, info: Callable[[str], None] = lambda message: None) -> Path | None:
        """Create the directory; return the checkpoint to resume from (None: fresh start).

        A directory that already holds a run is never overwritten silently: only with ``overwrite``,
        and ``info`` is told what was deleted. A path that cannot hold a run (a file, a read-only or
        missing parent) is refused with one line, before anything is loaded.
        """
        self._check_writable()
        if resume:
            latest = self.latest_checkpoint()
            if latest is None:
                if self.holds_a_run():
                    raise RunDirectoryError(
                        f"train.resume=true but {self.root} holds no complete checkpoint to resume from"
                    )
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
            info(f"train.overwrite=true: deleting the run in {self.root} ({', '.join(self._delete_run())})")
        return None

    def _delete_run(self) -> list[str]:
        """Delete everything a run wrote here; returns what it was (for the one line that says so)."""
        deleted = []
        for child in (self.checkpoints, self.final, *(self.root / name for name in DERIVED_DIRS)):
            if child.exists():
                deleted.append(f"{child.name}/")
                shutil.rmtree(child, ignore_errors=True)
        for child in sorted(self.root.iterdir()):
            if child.is_file():
                deleted.append(child.name)
                child.unlink()
        return deleted

    def _check_writable(self) -> None:
        """The directory exists (or is created) and a file can be written in it."""
        if self.root.exists() and not self.root.is_dir():
            raise RunDirectoryError(f"train.out_dir={str(self.root)!r} is a file, not a directory: choose another train.out_dir")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise RunDirectoryError(f"train.out_dir={str(self.root)!r} cannot be written ({err.strerror or err}): "
                                    "choose a writable train.out_dir") from None


def remove_temporary_dirs(parent: Path) -> None:
    """Delete leftovers of interrupted atomic writes (hidden ``.tmp-*`` directories)."""
    if parent.is_dir():
        for entry in parent.iterdir():
            if entry.name.startswith(".tmp-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
