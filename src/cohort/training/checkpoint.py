"""Atomic checkpoints and exact resume.

A checkpoint (or ``final/``) is written completely into a hidden temporary directory beside its
destination, flushed to disk, then renamed into place in one ``os.rename``: a crash at any moment
leaves the previous checkpoint or the new one, never a half-written one.

Nothing a resume reads can run code: weights are safetensors, and the trainer state is loaded with
``torch.load(..., weights_only=True)``, which only accepts tensors and plain containers (the RNG
states are stored in that form, see :func:`capture_rng_state`).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohort.atomic import atomic_directory
from cohort.run_directory import TRAINER_STATE, RunDirectory


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
