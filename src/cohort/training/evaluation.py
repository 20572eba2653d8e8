"""The run's held-out evaluations: before training, after it, and every ``train.eval_every`` steps.

Every summary names the model it measured (``extra.checkpoint``: the step, and a fingerprint of the
weights or the initial model's path), and a summary on disk is reused only when it names the same
model, so a resumed or extended run never shows numbers of other weights. A run whose task has no
held-out split, or whose rewards do not say which one decides correctness, evaluates nothing and
says so once, at the start, with the setting that turns it on.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from cohort.config import Config
from cohort.data.tasks import Task
from cohort.distributed import World
from cohort.evaluation.evaluate import EvalSummary
from cohort.evaluation.held_out import evaluate_held_out, read_eval, write_eval
from cohort.monitoring.console import RunConsole
from cohort.records import dumps
from cohort.rollout.engines import NATIVE, RolloutEngine
from cohort.run_directory import RunDirectory
from cohort.sources import ScoringStage

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weights_fingerprint(directory: Path) -> str:
    """sha256 over the weight files of a saved model directory (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class HeldOutEvaluations:
    """Evaluates the policy on the task's held-out split (rank 0) as training samples and scores."""

    def __init__(self, *, config: Config, task: Task, run_dir: RunDirectory, world: World, console: RunConsole,
                 policy: Any, tokenizer: Any, scoring: Callable[[], ScoringStage],
                 gathered: Callable[[], AbstractContextManager], engine: RolloutEngine = NATIVE) -> None:
        self.config, self.task, self.run_dir, self.world, self.console = config, task, run_dir, world, console
        self.policy, self.tokenizer, self.scoring, self.gathered = policy, tokenizer, scoring, gathered
        self.engine = engine
        self._latest_point: tuple[int, EvalSummary, list] | None = None  # rank 0: (step, summary, problems)

    def why_not(self) -> str | None:
        """Why held-out evaluation cannot run (None: it can)."""
        if self.task.test is None:
            return (f"task {self.task.name!r} has no held-out split (set data.test_fraction, e.g. 0.05, or "
                    "data.test_path)")
        if self.scoring().correctness is None:
            names = ", ".join(r.name for r in self.scoring().rewards)
            return (f"no reward says which samples are correct (rewards: {names}); add correctness: true to the one "
                    "that does in reward.functions, or use a built-in rule (exact_match, math, code, final_answer)")
        return None

    def announce(self) -> None:
        """One line at the start when evaluation is asked for and cannot run."""
        train = self.config.train
        reason = self.why_not()
        if reason is not None and (train.eval_before or train.eval_after or train.eval_every):
            self.console.info(f"held-out evaluation is off: {reason}")

    def summary(self, label: str, checkpoint: dict[str, Any]) -> EvalSummary | None:
        """eval_<label>.json for the model ``checkpoint`` names; computed unless the file names the same."""
        if self.why_not() is not None:
            return None
        path = self.run_dir.eval_summary(label)
        summary = None
        with self.gathered():
            self.engine.follow(self.policy)  # every rank: under FSDP2 copying the weights gathers shards
            if self.world.is_main:
                summary = read_eval(path) if path.exists() else None
                if summary is None or summary.extra.get("checkpoint") != checkpoint:
                    summary = self._evaluate_now(label, path, checkpoint)
            self.world.barrier()
        return summary

    def curve_point(self, step: int) -> None:
        """One point of the held-out curve (train.eval_every), appended to eval_curve.jsonl by rank 0."""
        if self.why_not() is not None:
            return
        with self.gathered():
            self.engine.follow(self.policy)
            if self.world.is_main:
                summary, problems = self._run(f"step {step}")
                self._latest_point = (step, summary, problems)
                with self.run_dir.eval_curve.open("a", encoding="utf-8") as handle:
                    handle.write(dumps({"step": step, **summary.to_dict()}) + "\n")
            self.world.barrier()

    def _run(self, label: str):
        with self.console.progress(f"evaluating ({label})") as update:
            return evaluate_held_out(self.config, self.task, self.policy, self.tokenizer, self.scoring().rewards,
                                     num_samples=self.config.train.eval_samples, on_progress=update, engine=self.engine)

    def _evaluate_now(self, label: str, path: Path, checkpoint: dict[str, Any]) -> EvalSummary:
        """Evaluates the model ``checkpoint`` names, unless this process's latest curve point was
        taken at the same step: then it measured these weights (no step ran since) with the same
        prompts, seed and sampling, and its numbers are reused (train.eval_every dividing
        train.steps would otherwise evaluate the final weights twice)."""
        if self._latest_point is not None and self._latest_point[0] == checkpoint["step"]:
            step, summary, problems = self._latest_point
            self.console.info(f"evaluation ({label}): reusing the step-{step} curve point (the same weights)")
            summary = dataclasses.replace(summary, extra=dict(summary.extra))
        else:
            self.console.info(f"evaluating ({label}) on the held-out problems ...")
            summary, problems = self._run(label)
        summary.extra["checkpoint"] = checkpoint
        write_eval(summary, problems, path, self.run_dir.eval_problems(label))
        self.console.event(f"eval_{label}", summary.to_dict())
        return summary
