"""Running a reproduction: every (arm, seed) run in a pool of processes, the pass@K / maj@K
evaluations of Figure 7, the per-run measures; everything resumable.

Layout of the output directory::

    reward_models/summary.json              the shipped reward models' held-out numbers (and the gate)
    runs/<arm>/seed-<s>/                    one cohort run directory each (done: summary.json;
                                            measures.json: what its completions and reward model show)
    figure7/<label>.json                    evaluations with K samples per problem
    results.json, report.html               what came out (see cohort.reproduce.analysis)

A finished piece is never redone; an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cohort.reproduce.plan import ARMS, Arm, Scale, common_overrides

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One training run: an arm at a seed."""

    arm: str
    seed: int
    directory: Path

    @property
    def done(self) -> bool:
        return (self.directory / "summary.json").is_file()


def run_directory(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed-{seed}"


def arm_config(arm: Arm, scale: Scale, seed: int, out: Path):
    """The run config of one job (resuming when its directory holds a run)."""
    from cohort.config import load_config
    from cohort.run_directory import RunDirectory

    directory = run_directory(out, arm.name, seed)
    resume = RunDirectory(directory).latest_checkpoint() is not None
    extra = ["train.resume=true"] if resume else ["train.overwrite=true"]
    return load_config(None, common_overrides(scale, seed, directory) + arm.overrides(scale) + extra)


def _train_job(arm_name: str, seed: int, scale: Scale, out: str) -> dict[str, Any]:
    """In a worker process: train one job and write its summary.json (the done marker)."""
    import torch
    from transformers.utils import logging as hf_logging

    from cohort.monitoring.console import RunConsole
    from cohort.records import dumps
    from cohort.training.trainer import Trainer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    arm = next(a for a in ARMS if a.name == arm_name)
    config = arm_config(arm, scale, seed, Path(out))
    started = time.perf_counter()
    summary = Trainer(config, RunConsole("silent", config.train.steps)).train()
    summary["wall_seconds"] = time.perf_counter() - started
    (Path(config.train.out_dir) / "summary.json").write_text(dumps(summary, indent=1))
    return summary


def run_jobs(jobs: list[Job], scale: Scale, out: Path, workers: int, progress: ProgressFn) -> None:
    """Train the jobs not yet done, ``workers`` at a time, reporting which run and the time left."""
    pending = [job for job in jobs if not job.done]
    skipped = len(jobs) - len(pending)
    if skipped:
        progress(f"{skipped} of {len(jobs)} runs already finished: skipped")
    durations: list[float] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        running = {pool.submit(_train_job, job.arm, job.seed, scale, str(out)): job for job in pending[:workers]}
        queue = pending[workers:]
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                summary = future.result()  # a failing run stops the reproduction with its error
                durations.append(summary["wall_seconds"])
                left = len(queue) + len(running)
                eta = sum(durations) / len(durations) * left / workers
                now = ", ".join(f"{j.arm}/seed {j.seed}" for j in running.values())
                progress(f"done {job.arm} seed {job.seed} ({summary['wall_seconds']:.0f} s); {left} runs left, "
                         f"about {eta / 60:.1f} min" + (f"; running {now}" if now else ""))
                if queue:
                    nxt = queue.pop(0)
                    running[pool.submit(_train_job, nxt.arm, nxt.seed, scale, str(out))] = nxt


def jobs_for(arms: tuple[Arm, ...], scale: Scale, out: Path) -> list[Job]:
    """Every (arm, seed) run of a reproduction, seed by seed (so the first seeds of every arm finish first)."""
    most = max(arm.seed_count(scale) for arm in arms)
    return [Job(arm.name, seed, run_directory(out, arm.name, seed)) for seed in range(most) for arm in arms
            if seed < arm.seed_count(scale)]


def default_workers() -> int:
    """One run per CPU core (each run uses one thread), at most 4."""
    return max(1, min(4, os.cpu_count() or 1))
