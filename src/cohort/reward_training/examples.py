"""Labelled data for reward-model training: outcome and process examples, JSONL readers and writers.

An outcome example is one (prompt, completion) with a label in [0, 1] (1 = good); a process example
is a prompt, the steps of a completion and one label in [0, 1] per step. Soft labels (a fraction,
e.g. Math-Shepherd's share of Monte-Carlo completions that reached the answer) are allowed.

JSONL layouts (one object per line; blank lines are skipped):

* outcome: ``{"prompt", "completion", "label"}``
* process: ``{"prompt", "steps": [...], "labels": [...]}``, or TRL's stepwise layout
  ``{"prompt", "completions": [...], "labels": [...]}``, or ``{"prompt", "completion", "labels"}``
  where the completion is split into steps at a marker exactly as the PRM splits it at scoring
  time (:func:`cohort.rewards.process_model.split_steps`).

A prompt is a string or a list of ``{"role", "content"}`` chat messages. Labels are numbers in
[0, 1] or booleans. Every error names the file, the 1-based line and the column.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from cohort.rewards.process_model import split_steps

Prompt = Union[str, Sequence[Mapping[str, str]]]


@dataclass(frozen=True)
class OutcomeExample:
    """A completion of a prompt and how good it is as a whole (1 = right, 0 = wrong, or in between)."""

    prompt: Prompt
    completion: str
    label: float

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}


@dataclass(frozen=True)
class ProcessExample:
    """The steps of a completion of a prompt and one label in [0, 1] per step.

    Steps are stored stripped of surrounding whitespace and non-empty: that is what the process
    reward model reads at scoring time (``split_steps`` drops blank steps and strips the others).
    """

    prompt: Prompt
    steps: tuple[str, ...]
    labels: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "steps": list(self.steps), "labels": list(self.labels)}


Example = Union[OutcomeExample, ProcessExample]


class DataError(ValueError):
    """A labelled-data row is malformed; the message names file, row and column."""


def _where(source: str, row: int, column: str | None = None) -> str:
    return f"{source}: row {row}" + (f": column {column!r}" if column is not None else "")


def check_label(value: Any, where: str) -> float:
    """A label as a float in [0, 1] (booleans are 0 / 1); DataError naming ``where`` otherwise."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: a label must be a number in [0, 1] or a boolean, got {value!r}")
    return float(value)


def check_prompt(value: Any, where: str) -> Prompt:
    """A prompt: a string, or a non-empty list of chat messages with string role and content."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(f"{where}: the prompt must be a string or a list of {{role, content}} messages, got {value!r}")


def outcome_example(prompt: Any, completion: Any, label: Any, where: str = "example") -> OutcomeExample:
    """A validated OutcomeExample (``where`` prefixes error messages)."""
    if not isinstance(completion, str):
        raise DataError(f"{where}: column 'completion': must be a string, got {completion!r}")
    return OutcomeExample(check_prompt(prompt, f"{where}: column 'prompt'"), completion, check_label(label, f"{where}: column 'label'"))


def process_example(prompt: Any, steps: Any, labels: Any, where: str = "example", steps_column: str = "steps") -> ProcessExample:
    """A validated ProcessExample: steps stripped and non-empty, one label per step."""
    checked_prompt = check_prompt(prompt, f"{where}: column 'prompt'")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise DataError(f"{where}: column {steps_column!r}: must be a non-empty list of non-blank strings, got {steps!r}")
    if not isinstance(labels, list):
        raise DataError(f"{where}: column 'labels': must be a list with one label per step, got {labels!r}")
    if len(labels) != len(steps):
        raise DataError(f"{where}: column 'labels': {len(labels)} labels for {len(steps)} steps")
    checked = tuple(check_label(value, f"{where}: column 'labels'") for value in labels)
    return ProcessExample(checked_prompt, tuple(s.strip() for s in steps), checked)


def _rows(path: str | Path):
    """(1-based line number, object) for each non-blank line of a JSONL file."""
    source = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"{source}: cannot read the file ({err.strerror or err})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{_where(source, number)}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{_where(source, number)}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _require(row: Mapping[str, Any], columns: Sequence[str], where: str) -> None:
    for column in columns:
        if column not in row:
            raise DataError(f"{where}: column {column!r}: missing (the row has {sorted(row)})")


def read_outcome_examples(path: str | Path) -> list[OutcomeExample]:
    """Outcome examples from a JSONL file with prompt / completion / label columns."""
    examples = []
    for number, row in _rows(path):
        where = _where(str(path), number)
        _require(row, ("prompt", "completion", "label"), where)
        examples.append(outcome_example(row["prompt"], row["completion"], row["label"], where))
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def read_process_examples(path: str | Path, step_marker: str = "\n") -> list[ProcessExample]:
    """Process examples from a JSONL file: prompt / steps / labels, prompt / completions / labels
    (TRL's stepwise layout), or prompt / completion / labels with the completion split at
    ``step_marker`` as the PRM splits it."""
    examples = []
    for number, row in _rows(path):
        where = _where(str(path), number)
        steps_column = next((c for c in ("steps", "completions", "completion") if c in row), "steps")
        _require(row, ("prompt", steps_column, "labels"), where)
        steps = row[steps_column]
        if steps_column == "completion":
            if not isinstance(steps, str):
                raise DataError(f"{where}: column 'completion': must be a string, got {steps!r}")
            steps = [steps[a:b] for a, b in split_steps(steps, step_marker)]
        examples.append(process_example(row["prompt"], steps, row["labels"], where, steps_column))
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def write_examples(path: str | Path, examples: Sequence[Example]) -> Path:
    """Write examples as JSONL in the layout the readers take back; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
    return path


def with_replay(fresh: Sequence[Example], earlier: Sequence[Example], share: float, seed: int = 0) -> list[Example]:
    """``fresh`` plus a seeded random sample of ``earlier`` making up ``share`` of the result
    (as far as ``earlier`` reaches), for continued training that does not forget older data."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the replay share must be in [0, 1), got {share}")
    wanted = round(share / (1.0 - share) * len(fresh))
    replayed = random.Random(seed).sample(list(earlier), min(wanted, len(earlier)))
    return list(fresh) + replayed
