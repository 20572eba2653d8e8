"""The built-in multi-step task: chains of 2 to 4 additions / subtractions, worked one operation per line.

A problem reads ``"12+7-5+30="``; its worked solution (the SFT target) carries the running result
from line to line and its answer is the result of the last line::

    12+7=19
    19-5=14
    14+30=44

Steps are separated by ``"\\n"`` (the default step marker of cohort's process reward model), so
each line is one step that can be checked on its own: ``check_steps`` says, line by line, whether
the line applies the problem's next operator and operand to the previous line's result and
computes it correctly. It is the *gold* step checker, for tests and analysis (e.g. comparing a
trained PRM or Monte-Carlo step labels against the truth), not a training signal unless asked.
``final_answer`` extracts the number after the last ``=`` of the last line (the outcome reward);
``well_formed`` is the format the outcome rule also requires: one ``a+b=c`` / ``a-b=c`` line per
operation, so merged, malformed, missing or extra lines score 0 whatever the last number says.

Operands and every running result are whole numbers 0..99 (each step is a two-digit addition or
subtraction, the difficulty of the ``arithmetic`` task), so the character vocabulary is just
digits, ``+``, ``-``, ``=`` and newline. The problem space (well over 10^8 problems) is split once by a
SHA-256 hash of the prompt text: about 10% is held out for evaluation and can never be drawn for
training, whatever the seed. ``split_problems`` returns a fixed sample of distinct problems of each
split; ``iter_problems`` an endless seeded stream. Pure Python (no torch), deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Iterator, Sequence

MAX_OPERAND = 99
"""Operands are whole numbers 0..MAX_OPERAND."""

MIN_OPERATIONS = 2
MAX_OPERATIONS = 4
"""A problem has MIN_OPERATIONS..MAX_OPERATIONS operations (one more operand), drawn uniformly."""

MAX_RESULT = 99
"""Every running result (hence every number in a gold solution) is in 0..MAX_RESULT."""

OPERATORS = ("+", "-")

STEP_MARKER = "\n"
"""What separates the steps of a solution (cohort's PRM default)."""

HELD_OUT_PERCENT = 10
"""Share of the problem space (chosen by prompt hash) reserved for evaluation."""

SPLITS = ("train", "test")

NUM_SPLIT_PROBLEMS = {"train": 20_000, "test": 1_000}
"""How many distinct problems ``split_problems`` returns for each split."""

_NUMBER = r"(0|[1-9][0-9]*)"
_LINE = re.compile(rf"{_NUMBER}([+-]){_NUMBER}={_NUMBER}")
"""One step: ``left operator right = result``, numbers written without leading zeros."""
_PROMPT = re.compile(r"[0-9]+(?:[+-][0-9]+)+=")
_ANSWER = re.compile(_NUMBER)


def _apply(left: int, operator: str, right: int) -> int:
    return left + right if operator == "+" else left - right


def _apply_all(operands: Sequence[int], operators: Sequence[str]) -> int:
    running = operands[0]
    for operator, operand in zip(operators, operands[1:]):
        running = _apply(running, operator, operand)
    return running


def solution_lines(operands: Sequence[int], operators: Sequence[str]) -> list[str]:
    """The gold steps: one ``running op operand = result`` line per operation.

    >>> solution_lines([12, 7, 5, 30], ["+", "-", "+"])
    ['12+7=19', '19-5=14', '14+30=44']
    """
    lines, running = [], operands[0]
    for operator, operand in zip(operators, operands[1:]):
        result = _apply(running, operator, operand)
        lines.append(f"{running}{operator}{operand}={result}")
        running = result
    return lines


def _check_problem(operands: Sequence[int], operators: Sequence[str]) -> None:
    if not MIN_OPERATIONS <= len(operators) <= MAX_OPERATIONS or len(operands) != len(operators) + 1:
        raise ValueError(
            f"a problem has {MIN_OPERATIONS}..{MAX_OPERATIONS} operators and one more operand, "
            f"got {len(operands)} operands and {len(operators)} operators"
        )
    if any(operator not in OPERATORS for operator in operators):
        raise ValueError(f"operators must be in {OPERATORS}, got {list(operators)}")
    if any(not 0 <= operand <= MAX_OPERAND for operand in operands):
        raise ValueError(f"operands must be in 0..{MAX_OPERAND}, got {list(operands)}")
    running = operands[0]
    for operator, operand in zip(operators, operands[1:]):
        running = _apply(running, operator, operand)
        if not 0 <= running <= MAX_RESULT:
            raise ValueError(
                f"every running result must be in 0..{MAX_RESULT}, got {running} in {list(operands)} {list(operators)}"
            )


def make_problem(operands: Sequence[int], operators: Sequence[str]) -> dict[str, str]:
    """The row ``{"prompt", "answer", "solution"}`` for ``operands[0] op operands[1] op ...``.

    >>> make_problem([12, 7, 5, 30], ["+", "-", "+"])
    {'prompt': '12+7-5+30=', 'answer': '44', 'solution': '12+7=19\\n19-5=14\\n14+30=44'}
    """
    _check_problem(operands, operators)
    prompt = str(operands[0]) + "".join(f"{op}{n}" for op, n in zip(operators, operands[1:])) + "="
    lines = solution_lines(operands, operators)
    return {"prompt": prompt, "answer": lines[-1].rsplit("=", 1)[1], "solution": STEP_MARKER.join(lines)}


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    """``"12+7-5+30="`` -> ``([12, 7, 5, 30], ["+", "-", "+"])``; ValueError for anything else."""
    if not isinstance(prompt, str) or not _PROMPT.fullmatch(prompt):
        raise ValueError(f"not a multi-step prompt (like '12+7-5+30='): {prompt!r}")
    operators = re.findall(r"[+-]", prompt)
    operands = [int(number) for number in re.findall(r"[0-9]+", prompt)]
    _check_problem(operands, operators)
    return operands, operators


def split_of(prompt: str) -> str:
    """``"test"`` for the held-out share of prompts, ``"train"`` for the rest (stable SHA-256 hash).

    Depends on the prompt text only, never on a seed, so no seed can leak a held-out problem
    into training. Salted with the task name so it is independent of the arithmetic task's split.
    """
    digest = hashlib.sha256(f"cohort-multistep/{prompt}".encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < HELD_OUT_PERCENT else "train"


def random_problem(rng: random.Random) -> dict[str, str]:
    """One problem drawn from ``rng``: 2..4 operations (uniform); each step's (operator, operand) is
    uniform over the pairs that keep the running result in 0..MAX_RESULT.

    From a running result ``r`` there are always ``MAX_RESULT + 2`` such pairs (``+0..+(MAX_RESULT-r)``
    and ``-0..-r``), and the next running result is uniform over 0..MAX_RESULT, so answers are
    spread evenly rather than piling up at 0 or 99.
    """
    count = rng.randint(MIN_OPERATIONS, MAX_OPERATIONS)
    operands, operators = [rng.randint(0, MAX_OPERAND)], []
    for _ in range(count):
        headroom = MAX_RESULT - _apply_all(operands, operators)
        pick = rng.randint(0, MAX_RESULT + 1)
        operators.append("+" if pick <= headroom else "-")
        operands.append(pick if pick <= headroom else pick - headroom - 1)
    return make_problem(operands, operators)


def iter_problems(split: str = "train", seed: int = 0) -> Iterator[dict[str, str]]:
    """Endless stream of problems of ``split`` (fresh draws, repeats possible), reproducible from ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"cohort-multistep/{split}/{seed}")
    while True:
        problem = random_problem(rng)
        if split_of(problem["prompt"]) == split:
            yield problem


@functools.lru_cache(maxsize=None)
def _split_sample(split: str, operations: int | None = None) -> tuple[tuple[str, str, str], ...]:
    seen: dict[str, tuple[str, str, str]] = {}
    stream = iter_problems(split, seed=-1 if operations is None else -1 - operations)  # apart from the seeds runs use
    while len(seen) < NUM_SPLIT_PROBLEMS[split]:
        problem = next(stream)
        if operations is None or problem["solution"].count(STEP_MARKER) + 1 == operations:
            seen.setdefault(problem["prompt"], (problem["prompt"], problem["answer"], problem["solution"]))
    return tuple(seen.values())


def split_problems(split: str, operations: int | None = None) -> list[dict[str, str]]:
    """A fixed sample of ``NUM_SPLIT_PROBLEMS[split]`` distinct problems of ``split``, in a fixed order;
    with ``operations``, only problems of that many operations (e.g. 4: the longest chains, where a
    sampled group most often holds no right answer and the outcome signal is sparsest).

    Rows are ``{"prompt", "answer", "solution"}``; ``solution`` is the gold worked completion.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if operations is not None and not MIN_OPERATIONS <= operations <= MAX_OPERATIONS:
        raise ValueError(f"operations must be in {MIN_OPERATIONS}..{MAX_OPERATIONS} or None, got {operations!r}")
    return [{"prompt": p, "answer": a, "solution": s} for p, a, s in _split_sample(split, operations)]


def completion_steps(completion: str, marker: str = STEP_MARKER) -> list[str]:
    """The non-blank steps of ``completion`` split at ``marker``, stripped of surrounding whitespace.

    The same steps as ``cohort.rewards.process_model.split_steps`` (which gives their spans).
    """
    if not marker:
        raise ValueError("the step marker must be a non-empty string")
    return [piece.strip() for piece in completion.split(marker) if piece.strip()]


def final_answer(completion: str, marker: str = STEP_MARKER) -> str | None:
    """The number after the last ``=`` of the last step, or None when there is none.

    >>> final_answer("12+7=19\\n19-5=14\\n14+30=44")
    '44'
    """
    steps = completion_steps(completion, marker)
    if not steps or "=" not in steps[-1]:
        return None
    answer = steps[-1].rsplit("=", 1)[1].strip()
    return answer if _ANSWER.fullmatch(answer) else None


def check_steps(prompt: str, completion: str, marker: str = STEP_MARKER) -> list[bool]:
    """The gold verdict on each step of ``completion`` (one per ``completion_steps`` entry).

    Step k is right when it reads ``left op right = result`` with ``left`` the previous step's
    written result (the first operand for step 1), ``op`` / ``right`` the problem's k-th operator
    and (k+1)-th operand, and ``result`` computed correctly. Verdicts are local: a step that
    correctly carries on from a wrong result is right (``first_error`` gives the prefix view).
    A malformed step is wrong and leaves no result, so the step after it is wrong too; steps past
    the problem's number of operations are wrong.

    >>> check_steps("12+7-5+30=", "12+7=19\\n19-5=15\\n15+30=45")
    [True, False, True]
    """
    operands, operators = parse_prompt(prompt)
    verdicts, carried = [], operands[0]
    for index, step in enumerate(completion_steps(completion, marker)):
        match = _LINE.fullmatch(step)
        if match is None:
            verdicts.append(False)
            carried = None
            continue
        left, operator, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
        verdicts.append(
            index < len(operators)
            and left == carried
            and operator == operators[index]
            and right == operands[index + 1]
            and result == _apply(left, operator, right)
        )
        carried = result
    return verdicts


def first_error(prompt: str, completion: str, marker: str = STEP_MARKER) -> int | None:
    """The 1-based index of the first wrong step; ``len(steps) + 1`` when steps are missing; None if all right.

    None exactly when the completion is the gold solution up to whitespace, i.e. every step is
    right and there are as many steps as operations.
    """
    verdicts = check_steps(prompt, completion, marker)
    wrong = next((index for index, ok in enumerate(verdicts, start=1) if not ok), None)
    if wrong is not None:
        return wrong
    expected = len(parse_prompt(prompt)[1])
    return None if len(verdicts) == expected else len(verdicts) + 1


def is_step_line(step: str) -> bool:
    """Whether one step reads ``left op right = result`` with a single operator (numbers without
    leading zeros); a merged line such as ``12+7-5=14`` does not.

    >>> is_step_line("19-5=14"), is_step_line("12+7-5=14"), is_step_line("19-5 = 14")
    (True, False, False)
    """
    return _LINE.fullmatch(step) is not None


def well_formed(prompt: str, completion: str, marker: str = STEP_MARKER) -> bool:
    """The task's format: every step is one operation (``is_step_line``) and there is one step per
    operation of the problem. What the steps compute is not checked here (``check_steps`` does).
    A prompt that is not a multi-step problem (a template around it, say) only has its lines checked.

    >>> well_formed("12+7-5=", "12+7=19\\n19-5=14"), well_formed("12+7-5=", "12+7-5=14")
    (True, False)
    """
    steps = completion_steps(completion, marker)
    if not steps or not all(is_step_line(step) for step in steps):
        return False
    try:
        expected = len(parse_prompt(prompt)[1])
    except ValueError:
        return True
    return len(steps) == expected


def prefix_correct(prompt: str, completion: str, marker: str = STEP_MARKER) -> list[bool]:
    """For each step k, whether steps 1..k are all right (``check_steps``): the gold counterpart of a
    Monte-Carlo step label ("can this prefix still reach the right answer?").

    >>> prefix_correct("12+7-5+30=", "12+7=19\\n19-5=15\\n15+30=45")
    [True, False, False]
    """
    verdicts, running = [], True
    for ok in check_steps(prompt, completion, marker):
        running = running and ok
        verdicts.append(running)
    return verdicts


HARD_NEGATIVES = ("wrong_result", "wrong_carry", "merged_lines", "skipped_step")
"""The mistakes ``hard_negative`` writes into a completion: the kinds a partly trained policy makes."""


def _carry_on(lines: list[str], operations: list[tuple[str, int]], running: int) -> list[str]:
    """Lines that apply ``operations`` one by one from ``running``, computing each result correctly."""
    out = []
    for operator, operand in operations:
        result = _apply(running, operator, operand)
        out.append(f"{running}{operator}{operand}={result}")
        running = result
    return lines + out


def hard_negative(prompt: str, kind: str, rng: random.Random, marker: str = STEP_MARKER) -> str | None:
    """The problem's worked solution with one mistake of ``kind`` (``HARD_NEGATIVES``), later lines
    carrying it on as a policy that continues its own text would; None when the problem has no room
    for it (a single operation cannot skip a step, a result would leave 0..MAX_RESULT).

    ``wrong_result``: a line's result off by 1..10; ``wrong_carry``: a line starts from a number other
    than the previous result; ``merged_lines``: two operations written on one line
    (``12+7-5=14``); ``skipped_step``: an operation left out. Every number stays in 0..MAX_RESULT.

    >>> hard_negative("12+7-5=", "merged_lines", random.Random(0))
    '12+7-5=14'
    """
    if kind not in HARD_NEGATIVES:
        raise ValueError(f"kind must be one of {HARD_NEGATIVES}, got {kind!r}")
    operands, operators = parse_prompt(prompt)
    steps = list(zip(operators, operands[1:]))
    k = rng.randrange(len(steps) if kind == "wrong_result" else len(steps) - 1)  # the others need a step after k
    gold = solution_lines(operands, operators)
    running = [operands[0]] + [int(line.rsplit("=", 1)[1]) for line in gold]  # running[i]: value before step i
    if kind == "merged_lines":
        (op1, n1), (op2, n2) = steps[k], steps[k + 1]
        merged = f"{running[k]}{op1}{n1}{op2}{n2}={running[k + 2]}"
        lines = _carry_on(gold[:k] + [merged], steps[k + 2 :], running[k + 2])
    elif kind == "skipped_step":
        lines = _carry_on(gold[:k], steps[k + 1 :], running[k])
    else:
        offset = rng.choice((-1, 1)) * rng.randint(1, 10)
        if kind == "wrong_result":
            head = gold[k].rsplit("=", 1)[0]
            lines = _carry_on(gold[:k] + [f"{head}={running[k + 1] + offset}"], steps[k + 1 :], running[k + 1] + offset)
        else:
            lines = _carry_on(gold[: k + 1], steps[k + 1 :], running[k + 1] + offset)
    negative = any("=-" in line or line.startswith("-") for line in lines)
    if negative or any(int(n) > MAX_RESULT for line in lines for n in re.findall(r"[0-9]+", line)):
        return None
    return marker.join(lines)
