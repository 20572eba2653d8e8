"""Tasks: a training split, an optional held-out split, and the rewards that score them.

``load_task`` takes a built-in task name (``arithmetic``, ``multistep``, ``multistep4``) or a path to a local file
whose rows have a prompt and an answer column; a file task's default reward is exact match of the
answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cohort.data import multistep
from cohort.data.arithmetic import split_problems
from cohort.data.files import DatasetError, check_rows, read_table

if TYPE_CHECKING:
    import datasets



def _rows(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """A ``datasets.Dataset`` of generated rows (datasets is imported on first use: ~0.6 s)."""
    import datasets

    return datasets.Dataset.from_list(rows)

@dataclass(frozen=True)
class Task:
    """Rows to train on and to evaluate on, plus the default reward specs."""

    name: str
    train: datasets.Dataset
    test: datasets.Dataset | None
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    default_rewards: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def _arithmetic(seed: int) -> Task:
    """Every distinct training problem (drawn in a seeded order per epoch) and all 1,497 held-out ones."""
    return Task(
        name="arithmetic",
        train=_rows(split_problems("train")),
        test=_rows(split_problems("test")),
        default_rewards=({"name": "exact_match", "weight": 1.0},),
    )


def _multistep(seed: int) -> Task:
    """20,000 distinct training problems of worked multi-step arithmetic and 1,000 held-out ones.

    Rows also carry ``solution``, the gold worked completion (an SFT target: ``sft.target_column=solution``).
    """
    return Task(
        name="multistep",
        train=_rows(multistep.split_problems("train")),
        test=_rows(multistep.split_problems("test")),
        default_rewards=({"name": "final_answer", "weight": 1.0},),
    )


def _multistep4(seed: int) -> Task:
    """The multi-step task's 4-operation problems only (20,000 training, 1,000 held-out): the longest
    chains, where the outcome signal is sparsest (process supervision's case)."""
    return Task(
        name="multistep4",
        train=_rows(multistep.split_problems("train", operations=4)),
        test=_rows(multistep.split_problems("test", operations=4)),
        default_rewards=({"name": "final_answer", "weight": 1.0},),
    )


BUILTIN_TASKS: dict[str, Callable[[int], Task]] = {"arithmetic": _arithmetic, "multistep": _multistep, "multistep4": _multistep4}


def _read_rows(file: str | Path, data_format: str, question_column: str | None, solution_column: str | None) -> datasets.Dataset:
    """A data file's rows, turned into prompt / answer rows for the gsm8k and math formats."""
    table = read_table(file)
    if data_format == "plain":
        return table
    from cohort.data.math_formats import (
        normalize_math_dataset,  # math-verify loads only when used
    )

    return normalize_math_dataset(table, data_format, str(file), question_column, solution_column)


def load_task(
    task: str,
    *,
    seed: int = 0,
    test_path: str | None = None,
    test_fraction: float = 0.0,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    data_format: str = "plain",
    question_column: str | None = None,
    solution_column: str | None = None,
) -> Task:
    """The task named ``task`` (built-in) or read from the file at ``task``, rows checked.

    ``data_format`` ``gsm8k`` / ``math`` turns GSM8K- or MATH-format rows into prompt / answer rows
    (the question, and the reference answer taken from the worked solution); their default reward
    is the math-verify ``math`` reward instead of exact match.
    """
    if task in BUILTIN_TASKS:
        if test_path or test_fraction:
            raise DatasetError(f"built-in task {task!r} has its own held-out split; unset data.test_path / data.test_fraction")
        if data_format != "plain":
            raise DatasetError(f"built-in task {task!r} has its own format; unset data.format")
        return BUILTIN_TASKS[task](seed)

    def read(file: str | Path) -> datasets.Dataset:
        return _read_rows(file, data_format, question_column, solution_column)

    path = Path(task)
    if not path.suffix:
        raise DatasetError(
            f"data.task={task!r} is neither a built-in task ({', '.join(sorted(BUILTIN_TASKS))}) nor a data file path"
        )
    train = read(path)
    check_rows(train, str(path), prompt_column, answer_column)
    test = None
    if test_path:
        test = read(test_path)
        check_rows(test, str(test_path), prompt_column, answer_column)
    elif test_fraction:
        if len(train) < 2:
            raise DatasetError(f"{path}: {len(train)} row(s) cannot be split into train and held-out parts")
        parts = train.train_test_split(test_size=test_fraction, seed=seed, shuffle=True)
        train, test = parts["train"], parts["test"]
    return Task(
        name=path.stem,
        train=train,
        test=test,
        prompt_column=prompt_column,
        answer_column=answer_column,
        default_rewards=(
            {"name": "exact_match", "weight": 1.0, "answer_column": answer_column}
            if data_format == "plain"
            else {"name": "math", "weight": 1.0},
        ),
    )


def format_prompt(row: Mapping[str, Any], template: str, prompt_column: str) -> Any:
    """The prompt of one row: a message list as is, a string through ``template`` (e.g. ``"Q: {prompt}"``).

    The template sees the row's columns, and ``prompt`` is always the prompt column's value.
    """
    value = row[prompt_column]
    if not isinstance(value, str):
        return value
    try:
        return template.format(**{**row, "prompt": value})
    except (KeyError, IndexError, ValueError) as err:
        raise DatasetError(
            f"data.prompt_template={template!r} cannot be filled from the row's columns "
            f"({', '.join(sorted(row))}): {type(err).__name__}: {err}"
        ) from None


def rows_at(dataset: datasets.Dataset, indices: list[int]) -> list[dict[str, Any]]:
    """The rows at ``indices`` as dicts, read in one batched lookup (row by row is far slower)."""
    columns = dataset[indices]  # {column: [values]}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def row_columns(rows: Sequence[Mapping[str, Any]], exclude: Sequence[str] = ()) -> dict[str, list[Any]]:
    """Columns of a list of rows as ``{name: [value per row]}`` (what reward functions receive)."""
    names = [name for name in (rows[0] if rows else {}) if name not in exclude]
    return {name: [row[name] for row in rows] for name in names}


def task_from_settings(data: Any, seed: int) -> Task:
    """The task a run's ``data`` section names (a :class:`cohort.config.DataConfig`), rows checked."""
    return load_task(
        data.task,
        seed=seed,
        test_path=data.test_path,
        test_fraction=data.test_fraction,
        prompt_column=data.prompt_column,
        answer_column=data.answer_column,
        data_format=data.format,
        question_column=data.question_column,
        solution_column=data.solution_column,
    )
