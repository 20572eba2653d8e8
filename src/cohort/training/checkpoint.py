"""The run directory contract, atomic checkpoints and exact resume.

A checkpoint (or ``final/``) is written completely into a hidden temporary directory beside its
destination, flushed to disk, then renamed into place in one ``os.rename``: a crash at any moment
leaves the previous checkpoint or the new one, never a half-written one.

Nothing a resume reads can run code: weights are safetensors, and the trainer state is loaded with
``torch.load(..., weights_only=True)``, which only accepts tensors and plain containers (the RNG
states are stored in that form, see :func:`capture_rng_state`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.pt"
DERIVED_DIRS = ("offline", "iterations", "wandb", "mlruns")
"""Subdirectories a run derives from its config (cached samples, per-iteration models); an
overwritten run loses them with the rest."""


class RunDirectoryError(ValueError):
    """The output directory cannot be used as asked (it holds a run and neither resume nor overwrite is set)."""


@dataclass(frozen=True)
class RunDirectory:
    """Paths of a run directory (see DESIGN.md, "The run directory")."""

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


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_directory(destination: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``destination`` in one rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f".tmp-{destination.name}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        yield temporary
        _fsync_tree(temporary)
        if destination.exists():
            retired = destination.parent / f".tmp-retired-{destination.name}-{uuid.uuid4().hex[:8]}"
            os.rename(destination, retired)
            os.rename(temporary, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _numpy_state_as_tensors(state: tuple) -> dict[str, Any]:
    """numpy's legacy RNG state (name, uint32 keys, pos, has_gauss, cached) with the keys as a tensor."""
    name, keys, position, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(position),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_tensors(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


def capture_rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training step consumes, as tensors and plain values (weights-only loadable)."""
    version, internal, gauss = random.getstate()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": _numpy_state_as_tensors(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss"]))
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_pretrained_atomic(
    destination: Path,
    model,
    tokenizer,
    extra: dict[str, Any] | None = None,
    write_more: Callable[[Path], None] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write an HF-format model + tokenizer (and optionally trainer state and more files, e.g. a
    value model, written by ``write_more(directory)``) atomically. ``state_dict`` replaces the
    model's own (the gathered weights of a sharded model)."""
    with atomic_directory(destination) as temporary:
        save_model(model, temporary, state_dict)
        tokenizer.save_pretrained(temporary)
        if extra is not None:
            torch.save(extra, temporary / TRAINER_STATE)
        if write_more is not None:
            write_more(temporary)


def save_model(model, directory: Path, state_dict: dict[str, Any] | None = None) -> None:
    """``model.save_pretrained`` (safetensors), recording the model's own class even when FSDP2 has
    wrapped it in a generated subclass (``FSDPLlamaForCausalLM`` -> ``LlamaForCausalLM``)."""
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    original = next((cls for cls in type(model).__mro__ if not cls.__name__.startswith("FSDP")), type(model))
    config_path = Path(directory) / "config.json"
    if original is not type(model) and config_path.exists():
        config = json.loads(config_path.read_text())
        config["architectures"] = [original.__name__]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class UnsafeCheckpointError(ValueError):
    """The trainer state holds objects that only a full (code-running) unpickle could load."""


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint, loaded without running any code from the file."""
    try:
        return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError) for anything but tensors and containers
        raise UnsafeCheckpointError(
            f"{checkpoint / TRAINER_STATE} holds more than tensors and plain values, so it is not loaded (loading it "
            f"could run code); it may come from an older cohort or from someone else ({type(err).__name__})"
        ) from None


def prune_checkpoints(run: RunDirectory, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for step in run.checkpoint_steps()[:-keep]:
        shutil.rmtree(run.checkpoints / f"step-{step}", ignore_errors=True)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records of steps after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        if line.strip() and json.loads(line).get("step", 0) <= last_step:
            kept.append(line)
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)
