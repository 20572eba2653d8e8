"""Code-execution reward: run the program in each completion against its problem's tests.

The tests of a problem come in a dataset column (default ``tests``), as a list or a JSON string:

* stdin/stdout pairs (APPS, CodeContests): ``[{"input": "1 2\\n", "output": "3\\n"}, ...]``, or
  the column form ``{"inputs": [...], "outputs": [...]}`` (``input``/``output`` also accepted);
  the program reads the input on stdin; it passes when it exits 0 and its output equals the
  expected one after stripping the whole text and the end of every line;
* assertions (MBPP, HumanEval): ``["assert f(2) == 4", ...]``; each is appended to the program
  and passes when the process runs to the end (exit 0 *and* past the assertion, so that a program
  calling ``sys.exit(0)`` early does not pass every test).

Each test is its own process, so one crashing test cannot hide the others. All isolation lives in
:mod:`cohort.rewards.sandbox`; this module only extracts, schedules and scores.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from cohort.rewards.sandbox import ExecutionRequest, ExecutionResult, Sandbox, SandboxLimits

logger = logging.getLogger(__name__)

MODES = ("fraction", "all_or_nothing")
_FENCE = re.compile(r"^ {0,3}```\s*([^\s`]*)")  # an opening or closing ``` line and its info string
_PYTHON_TAGS = {"python", "py", "python3"}


@dataclass(frozen=True)
class StdioTest:
    """Feed ``input`` on stdin; expect ``output`` on stdout (compared by :func:`outputs_match`)."""

    input: str
    output: str


@dataclass(frozen=True)
class AssertionTest:
    """Python code (usually ``assert`` statements) appended to the program; passes if it runs through."""

    code: str


CodeTest = Union[StdioTest, AssertionTest]


class InvalidTestsError(ValueError):
    """A problem's test specification cannot be read; its completions score None."""


def extract_program(completion: str, *, require_block: bool = False) -> str | None:
    """The program in a completion: the last ```python block, else the last ``` block, else the whole text.

    A block left open at the end of the completion (cut by the token budget) counts as a block. With
    ``require_block`` a completion without any fenced block has no program (None).
    """
    blocks: list[tuple[str, str]] = []  # (info string, body)
    open_tag: str | None = None
    body: list[str] = []
    for line in completion.splitlines():
        fence = _FENCE.match(line)
        if fence is None:
            if open_tag is not None:
                body.append(line)
        elif open_tag is None:
            open_tag, body = fence.group(1).lower(), []
        elif line.strip() == "```":
            blocks.append((open_tag, "\n".join(body)))
            open_tag = None
        else:
            body.append(line)  # a fence with an info string cannot close a block
    if open_tag is not None:
        blocks.append((open_tag, "\n".join(body)))
    python_blocks = [text for tag, text in blocks if tag in _PYTHON_TAGS]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return None if require_block else completion


def outputs_match(actual: str, expected: str) -> bool:
    """Compare program output line by line, ignoring trailing whitespace and blank lines at both ends."""

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    return lines(actual) == lines(expected)


def parse_tests(spec: Any) -> list[CodeTest]:
    """Read one problem's test specification (list or JSON string); InvalidTestsError if malformed."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as err:
            raise InvalidTestsError(f"test specification is not valid JSON: {err}") from None
    if isinstance(spec, dict):
        return _parse_columns(spec)
    if not isinstance(spec, (list, tuple)):
        raise InvalidTestsError(f"test specification must be a list, a dict of inputs/outputs or JSON; got {type(spec).__name__}")
    if not spec:
        raise InvalidTestsError("test specification holds no tests")
    tests: list[CodeTest] = []
    for i, item in enumerate(spec):
        if isinstance(item, str) and item.strip():
            tests.append(AssertionTest(item))
        elif isinstance(item, dict) and isinstance(item.get("input"), str) and isinstance(item.get("output"), str):
            tests.append(StdioTest(item["input"], item["output"]))
        else:
            raise InvalidTestsError(
                f"test {i} must be a non-empty assertion string or a dict with str 'input' and 'output'; got {item!r:.200}"
            )
    return tests


def _parse_columns(spec: dict) -> list[CodeTest]:
    """The column form {"inputs": [...], "outputs": [...]} of APPS (and CodeContests' input/output)."""
    if spec.get("fn_name"):
        raise InvalidTestsError(f"call-based tests (fn_name={spec['fn_name']!r}) are not supported; use assertions")
    inputs = spec.get("inputs", spec.get("input"))
    outputs = spec.get("outputs", spec.get("output"))
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise InvalidTestsError(f"a dict test specification needs lists 'inputs' and 'outputs'; got keys {sorted(spec)}")
    if len(inputs) != len(outputs) or not inputs:
        raise InvalidTestsError(f"'inputs' and 'outputs' must be non-empty and of equal length; got {len(inputs)} and {len(outputs)}")
    if not all(isinstance(x, str) for x in inputs + outputs):
        raise InvalidTestsError("every entry of 'inputs' and 'outputs' must be a str")
    return [StdioTest(i, o) for i, o in zip(inputs, outputs)]


def _assertion_source(program: str, test: AssertionTest, token: str) -> str:
    """The program, then the test, then a line proving the process got past the test."""
    return f"{program}\n\n{test.code}\n\nimport os as _cohort_os\n_cohort_os.write(1, b'\\n{token}\\n')\n"


def _passed(test: CodeTest, result: ExecutionResult, token: str) -> bool:
    if not result.succeeded or result.stdout_truncated:
        return False
    if isinstance(test, StdioTest):
        return outputs_match(result.stdout, test.output)
    return token in result.stdout.splitlines()


class CodeExecutionReward:
    """TRL-compatible reward: the share of its problem's tests a completion's program passes.

    ``mode="fraction"`` scores passed/total, ``"all_or_nothing"`` 1.0 only if all pass. A program
    that fails, crashes or times out scores 0; a problem whose tests cannot be read scores None.
    Limits come either from ``timeout_s``/``memory_mb``/``workers`` or from a ready ``sandbox``.
    """

    is_correctness = True

    def __init__(
        self,
        mode: str = "fraction",
        *,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        workers: int | None = None,
        tests_column: str = "tests",
        require_code_block: bool = False,
        max_tests: int | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if max_tests is not None and (isinstance(max_tests, bool) or not isinstance(max_tests, int) or max_tests < 1):
            raise ValueError(f"max_tests must be a positive integer or None, got {max_tests!r}")
        if not isinstance(tests_column, str) or not tests_column:
            raise ValueError(f"tests_column must be a non-empty str, got {tests_column!r}")
        if sandbox is not None:
            if any(value is not None for value in (timeout_s, memory_mb, workers)):
                raise ValueError("give limits either through sandbox= or through timeout_s/memory_mb/workers, not both")
            self.sandbox = sandbox
        else:
            wall = 5.0 if timeout_s is None else timeout_s
            if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 < wall < math.inf:
                raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
            limits = SandboxLimits(wall_time_s=float(wall), cpu_time_s=math.ceil(wall), memory_mb=1024 if memory_mb is None else memory_mb)
            self.sandbox = Sandbox(limits, workers=workers)
        self.mode = mode
        self.tests_column = tests_column
        self.require_code_block = require_code_block
        self.max_tests = max_tests
        self.__name__ = self.name = "code_execution"

    @property
    def isolation(self) -> str:
        """The sandbox's isolation in words, for the run log."""
        return self.sandbox.isolation

    def extract_answer(self, completion: str) -> str | None:
        """The completion's program, stripped (what majority voting compares)."""
        program = extract_program(completion, require_block=self.require_code_block)
        return program.strip() if program is not None and program.strip() else None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """Score each completion against the tests in its row of ``columns[tests_column]``."""
        if self.tests_column not in columns:
            raise KeyError(f"code_execution needs the dataset column {self.tests_column!r}; got {sorted(columns)}")
        specs = columns[self.tests_column]
        if len(specs) != len(completions):
            raise ValueError(f"column {self.tests_column!r} has {len(specs)} rows for {len(completions)} completions")
        for i, completion in enumerate(completions):
            if not isinstance(completion, str):
                raise TypeError(f"completions[{i}] must be a str, got {type(completion).__name__}")
        token = secrets.token_hex(16)
        plans = [self._plan(i, completion, spec, token) for i, (completion, spec) in enumerate(zip(completions, specs))]
        unique = list(dict.fromkeys(request for plan in plans if plan for _, request in plan))
        results = dict(zip(unique, self.sandbox.run_many(unique)))
        return [None if plan is None else self._score(plan, results, token) for plan in plans]

    def _plan(self, row: int, completion: str, spec: Any, token: str) -> list[tuple[CodeTest, ExecutionRequest]] | None:
        """The runs that score one completion; None if its tests are unreadable, [] if it has no program."""
        try:
            tests = parse_tests(spec)[: self.max_tests]
        except InvalidTestsError as err:
            logger.warning("code_execution: row %d cannot be scored: %s", row, err)
            return None
        program = extract_program(completion, require_block=self.require_code_block)
        if program is None or not program.strip():
            return []
        plan = []
        for test in tests:
            if isinstance(test, StdioTest):
                plan.append((test, ExecutionRequest(program, test.input)))
            else:
                plan.append((test, ExecutionRequest(_assertion_source(program, test, token))))
        return plan

    def _score(self, plan: list[tuple[CodeTest, ExecutionRequest]], results: dict[ExecutionRequest, ExecutionResult], token: str) -> float:
        if not plan:
            return 0.0
        passed = sum(_passed(test, results[request], token) for test, request in plan)
        if self.mode == "all_or_nothing":
            return float(passed == len(plan))
        return passed / len(plan)
