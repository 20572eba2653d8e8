"""GSM8K- and MATH-format math data turned into cohort's ``prompt`` / ``answer`` rows.

* ``gsm8k``: rows ``{"question": ..., "answer": "...worked solution...\\n#### 72"}``: the prompt is the
  question, the reference answer what follows ``####`` (commas removed: ``1,000`` -> ``1000``); the
  worked solution is kept in a ``solution`` column.
* ``math``: rows ``{"problem": ..., "solution": "... \\boxed{\\frac{1}{2}} ..."}`` (plus e.g. ``level``,
  ``type``): the prompt is the problem, the reference the content of the solution's last ``\\boxed{}``.
* ``plain``: rows that already hold a prompt and an answer; returned unchanged.

Other columns are kept. Errors name the file, the row (1-based) and the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohort.data.files import DatasetError, read_table

if TYPE_CHECKING:
    import datasets
from cohort.rewards.math import last_boxed_content

MATH_FORMATS = ("plain", "gsm8k", "math")
"""Names accepted by :func:`normalize_math_dataset` (and ``data.format``)."""

DEFAULT_COLUMNS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}
"""Per format: (question column, worked-solution column) when none are given."""

GSM8K_MARKER = "####"


def gsm8k_reference(text: str) -> str:
    """The final answer of a GSM8K worked answer: the text after the last ``####``, commas removed.

    Raises ValueError when there is no marker or nothing after it. ``"...\\n#### 1,000"`` -> ``"1000"``.
    """
    if GSM8K_MARKER not in text:
        raise ValueError(f"no '{GSM8K_MARKER} <answer>' marker")
    answer = text.rsplit(GSM8K_MARKER, 1)[1].strip().replace(",", "")
    if not answer:
        raise ValueError(f"nothing after the '{GSM8K_MARKER}' marker")
    return answer


def math_reference(text: str) -> str:
    """The final answer of a MATH-style solution: the content of its last ``\\boxed{}``.

    Raises ValueError when there is none, it is never closed, or it is empty.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        raise ValueError("no \\boxed{...} answer")
    answer = last_boxed_content(text)
    if answer is None:
        raise ValueError("its last \\boxed{ is never closed")
    if not answer:
        raise ValueError("its last \\boxed{} is empty")
    return answer


_REFERENCE_READERS = {"gsm8k": gsm8k_reference, "math": math_reference}


def _check_format(fmt: str) -> None:
    if fmt not in MATH_FORMATS:
        raise ValueError(f"unknown math data format {fmt!r}; expected one of {', '.join(MATH_FORMATS)}")


def _require_column(dataset: datasets.Dataset, column: str, source: str, fmt: str) -> None:
    if column not in dataset.column_names:
        raise DatasetError(
            f"{source}: no column {column!r} (needed by format {fmt!r}); "
            f"the columns are: {', '.join(dataset.column_names) or '(none)'}"
        )


def _text(value: Any, source: str, row: int, column: str, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{source}: row {row}, column {column!r}: expected {expected}, got {value!r}")
    return value


def normalize_math_dataset(
    dataset: datasets.Dataset,
    fmt: str,
    source: str,
    question_column: str | None = None,
    solution_column: str | None = None,
) -> datasets.Dataset:
    """``dataset`` in format ``fmt`` with ``prompt`` and ``answer`` (reference) columns added, other columns kept.

    ``source`` names the data in errors (the file path). ``question_column`` / ``solution_column``
    override the format's columns (gsm8k: question / answer; math: problem / solution). Existing
    ``prompt`` / ``answer`` columns are replaced; a GSM8K worked answer moves to ``solution``
    (unless that column exists). Format ``plain`` returns ``dataset`` unchanged.
    """
    _check_format(fmt)
    if fmt == "plain":
        return dataset
    default_question, default_solution = DEFAULT_COLUMNS[fmt]
    question_column = question_column or default_question
    solution_column = solution_column or default_solution
    for column in (question_column, solution_column):
        _require_column(dataset, column, source, fmt)
    if len(dataset) == 0:
        raise DatasetError(f"{source}: the file holds no rows")
    read_reference = _REFERENCE_READERS[fmt]
    questions, solutions = list(dataset[question_column]), list(dataset[solution_column])
    prompts, references = [], []
    for row, (question, solution) in enumerate(zip(questions, solutions), start=1):
        prompts.append(_text(question, source, row, question_column, "a non-empty question string"))
        solution = _text(solution, source, row, solution_column, f"a non-empty {fmt} solution string")
        try:
            references.append(read_reference(solution))
        except ValueError as err:
            raise DatasetError(f"{source}: row {row}, column {solution_column!r}: {err}") from None
    new_columns = {"prompt": prompts, "answer": references}
    if fmt == "gsm8k" and solution_column == "answer" and "solution" not in dataset.column_names:
        new_columns["solution"] = solutions
    replaced = [name for name in new_columns if name in dataset.column_names]
    result = dataset.remove_columns(replaced) if replaced else dataset
    for name, values in new_columns.items():
        result = result.add_column(name, values)
    return result


def read_math_file(
    path: str | Path,
    fmt: str,
    question_column: str | None = None,
    solution_column: str | None = None,
) -> datasets.Dataset:
    """A local JSONL / JSON / parquet file in format ``fmt``, as rows with ``prompt`` and ``answer``."""
    _check_format(fmt)
    return normalize_math_dataset(read_table(path), fmt, str(path), question_column, solution_column)
