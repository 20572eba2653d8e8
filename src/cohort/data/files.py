"""Load a task's rows from a local JSONL / JSON / parquet file with ``datasets``, checked row by row.

Errors name the file, the row (1-based) and the column, so a bad dataset fails before training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or has a malformed row."""


def _first_bad_json_line(path: Path) -> str | None:
    """A description of the first JSONL line that is not a JSON object (or of an empty file), if any."""
    rows = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.strip())
            except json.JSONDecodeError as err:
                return f"row {number}: not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(value, dict):
                return f"row {number}: expected a JSON object, got {type(value).__name__}"
            rows += 1
    return None if rows else "the file holds no rows"


def read_table(path: str | Path) -> datasets.Dataset:
    """All rows of a local data file as a ``datasets.Dataset``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; expected one of {', '.join(FORMATS)}")
    if path.suffix.lower() == ".jsonl":  # our own check first: one message, with our row numbers
        problem = _first_bad_json_line(path)
        if problem is not None:
            raise DatasetError(f"{path}: {problem}")
    import datasets  # here, not at the top: importing it costs ~0.6 s that config checks do not need

    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # its parser logs the failure too; the error below says it once
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets wraps parser errors in several exception types
        raise DatasetError(f"{path}: could not be read ({type(err).__name__}: {' '.join(str(err).split())[:300]})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)
    )


def check_rows(dataset: datasets.Dataset, source: str, prompt_column: str, answer_column: str | None) -> None:
    """Raise DatasetError for a missing column or the first row whose prompt / answer is malformed."""
    required = [prompt_column] + ([answer_column] if answer_column else [])
    for column in required:
        if column not in dataset.column_names:
            raise DatasetError(
                f"{source}: no column {column!r}; the columns are: {', '.join(dataset.column_names) or '(none)'}"
            )
    if len(dataset) == 0:
        raise DatasetError(f"{source}: the file holds no rows")
    for number, row in enumerate(dataset, start=1):
        prompt = row[prompt_column]
        if not ((isinstance(prompt, str) and prompt.strip()) or _is_messages(prompt)):
            raise DatasetError(
                f"{source}: row {number}, column {prompt_column!r}: expected a non-empty string or a list of "
                f"{{role, content}} messages, got {prompt!r}"
            )
        if answer_column:
            answer = row[answer_column]
            if answer is None or isinstance(answer, (dict, list)) or (isinstance(answer, str) and not answer.strip()):
                raise DatasetError(
                    f"{source}: row {number}, column {answer_column!r}: expected a non-empty answer "
                    f"(string or number), got {answer!r}"
                )
