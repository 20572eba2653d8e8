"""Code-execution reward: run the program in each completion against its problem's tests.

The tests of a problem come in a dataset column (default ``tests``), as a list, a dict or a JSON string:

* stdin/stdout pairs (APPS, CodeContests): ``[{"input": "1 2\\n", "output": "3\\n"}, ...]``, or
  the column form ``{"inputs": [...], "outputs": [...]}`` (``input``/``output`` also accepted);
  the program reads the input on stdin (the only thing of the test it ever sees); it passes when
  it exits 0 and its output equals the expected one after stripping the whole text and the end of
  every line. Each input is its own process;
* assertions (MBPP): ``["assert f(2) == 4", ...]``, or MBPP's row form ``{"test_list": [...],
  "test_imports": [...], "test_setup_code": "..."}``;
* HumanEval: ``{"test": "def check(candidate): ...", "entry_point": "f"}`` (an optional
  ``"prompt"`` is run in the judge first, so that helpers the checks call are the dataset's own).

Assertion tests never run in the program's process: a judge sandbox runs them against proxies of
the program's top-level functions in a second sandbox and reports the verdict to the host (see
:mod:`cohort.rewards.sandbox.verdict`), so nothing the program prints, returns or patches can make a
failing test pass. All isolation lives in :mod:`cohort.rewards.sandbox.runner`; this module only
extracts, parses, schedules and scores.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from cohort.rewards.sandbox.runner import ExecutionResult, Sandbox, SandboxLimits
from cohort.rewards.sandbox.verdict import AssertionTest, run_assertion_tests

__all__ = [
    "MODES",
    "AssertionTest",
    "CodeExecutionReward",
    "CodeTest",
    "InvalidTestsError",
    "StdioTest",
    "extract_program",
    "outputs_match",
    "parse_tests",
]

logger = logging.getLogger(__name__)

MODES = ("fraction", "all_or_nothing")
_FENCE = re.compile(r"^ {0,3}```\s*([^\s`]*)")  # an opening or closing ``` line and its info string
_PYTHON_TAGS = {"python", "py", "python3"}


@dataclass(frozen=True)
class StdioTest:
    """Feed ``input`` on stdin; expect ``output`` on stdout (compared by :func:`outputs_match`)."""

    input: str
    output: str


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
    """Read one problem's test specification (list, dict or JSON string); InvalidTestsError if malformed."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as err:
            raise InvalidTestsError(f"test specification is not valid JSON: {err}") from None
    if isinstance(spec, dict):
        if "entry_point" in spec or "test" in spec:
            return [_parse_humaneval(spec)]
        if "test_list" in spec:
            return _parse_mbpp(spec)
        return _parse_columns(spec)
    if not isinstance(spec, (list, tuple)):
        raise InvalidTestsError(f"test specification must be a list, a dict or JSON; got {type(spec).__name__}")
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


def _parse_humaneval(spec: dict) -> AssertionTest:
    """HumanEval's form: {"test": code defining check(candidate), "entry_point": name, "prompt": optional}."""
    test, entry_point, prompt = spec.get("test"), spec.get("entry_point"), spec.get("prompt", "")
    if not isinstance(test, str) or not test.strip() or not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise InvalidTestsError(
            f"a HumanEval test specification needs a non-empty str 'test' and an identifier 'entry_point'; got keys {sorted(spec)}"
        )
    if not isinstance(prompt, str):
        raise InvalidTestsError(f"the HumanEval 'prompt' must be a str, got {type(prompt).__name__}")
    if not re.search(r"^\s*def\s+check\s*\(", test, re.MULTILINE):
        raise InvalidTestsError("the HumanEval 'test' must define check(candidate)")
    return AssertionTest(test, setup=prompt, entry_point=entry_point)


def _parse_mbpp(spec: dict) -> list[CodeTest]:
    """MBPP's row form: {"test_list": [assert, ...], "test_imports": [...], "test_setup_code": "..."}."""
    asserts, imports, setup = spec["test_list"], spec.get("test_imports") or [], spec.get("test_setup_code") or ""
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) and a.strip() for a in asserts):
        raise InvalidTestsError("'test_list' must be a non-empty list of non-empty assertion strings")
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports) or not isinstance(setup, str):
        raise InvalidTestsError("'test_imports' must be a list of str and 'test_setup_code' a str")
    prelude = "\n".join([*imports, setup]).strip()
    return [AssertionTest(code, setup=prelude) for code in asserts]


def _parse_columns(spec: dict) -> list[CodeTest]:
    """The column form {"inputs": [...], "outputs": [...]} of APPS (and CodeContests' input/output)."""
    if spec.get("fn_name"):
        raise InvalidTestsError(f"call-based tests (fn_name={spec['fn_name']!r}) are not supported; use assertions")
    inputs = spec.get("inputs", spec.get("input"))
    outputs = spec.get("outputs", spec.get("output"))
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise InvalidTestsError(
            "a dict test specification needs lists 'inputs' and 'outputs', a 'test_list' (MBPP) or "
            f"'test' and 'entry_point' (HumanEval); got keys {sorted(spec)}"
        )
    if len(inputs) != len(outputs) or not inputs:
        raise InvalidTestsError(f"'inputs' and 'outputs' must be non-empty and of equal length; got {len(inputs)} and {len(outputs)}")
    if not all(isinstance(x, str) for x in inputs + outputs):
        raise InvalidTestsError("every entry of 'inputs' and 'outputs' must be a str")
    return [StdioTest(i, o) for i, o in zip(inputs, outputs)]


def _stdio_passed(test: StdioTest, result: ExecutionResult) -> bool:
    """A stdin/stdout test passes when the program exits 0 and prints the expected output (uncut)."""
    return result.succeeded and not result.stdout_truncated and outputs_match(result.stdout, test.output)


@dataclass(frozen=True)
class _Job:
    """One unit of sandbox work: a stdin/stdout test, or all assertion tests of one program."""

    program: str
    stdio: StdioTest | None = None
    assertions: tuple[AssertionTest, ...] = ()

    def run(self, sandbox: Sandbox) -> list[bool]:
        if self.stdio is not None:
            return [_stdio_passed(self.stdio, sandbox.run(self.program, self.stdio.input))]
        return run_assertion_tests(sandbox, self.program, self.assertions)


class CodeExecutionReward:
    """TRL-compatible reward: the share of its problem's tests a completion's program passes.

    ``mode="fraction"`` scores passed/total, ``"all_or_nothing"`` 1.0 only if all pass. A program
    that fails, crashes or times out scores 0; a problem whose tests cannot be read scores None.
    Limits come either from ``timeout_s``/``memory_mb``/``workers``/``isolation`` or from a ready
    ``sandbox``. ``isolation`` (default "auto": bubblewrap, else IsolationUnavailable right here, at
    construction) may name a weaker layer explicitly ("unshare", "setuid", "none"), which then logs
    one warning; the ``isolation`` attribute is the layer in use, in words.
    """

    is_correctness = True

    def __init__(
        self,
        mode: str = "fraction",
        *,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        workers: int | None = None,
        isolation: str | None = None,
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
            if any(value is not None for value in (timeout_s, memory_mb, workers, isolation)):
                raise ValueError("give limits either through sandbox= or through timeout_s/memory_mb/workers/isolation, not both")
            self.sandbox = sandbox
        else:
            self.sandbox = _build_sandbox(timeout_s, memory_mb, workers, isolation)
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
        plans = [self._plan(i, completion, spec) for i, (completion, spec) in enumerate(zip(completions, specs))]
        unique = list(dict.fromkeys(job for plan in plans if plan for job in plan))  # same program, same tests: run once
        jobs: list[Callable[[], list[bool]]] = [functools.partial(job.run, self.sandbox) for job in unique]
        results = dict(zip(unique, self.sandbox.parallel(jobs)))
        return [None if plan is None else self._score([v for job in plan for v in results[job]]) for plan in plans]

    def _plan(self, row: int, completion: str, spec: Any) -> list[_Job] | None:
        """The jobs that score one completion; None if its tests are unreadable, [] if it has no program."""
        try:
            tests = parse_tests(spec)[: self.max_tests]
        except InvalidTestsError as err:
            logger.warning("code_execution: row %d cannot be scored: %s", row, err)
            return None
        program = extract_program(completion, require_block=self.require_code_block)
        if program is None or not program.strip():
            return []
        jobs = [_Job(program, stdio=test) for test in tests if isinstance(test, StdioTest)]
        assertions = tuple(test for test in tests if isinstance(test, AssertionTest))
        return jobs + ([_Job(program, assertions=assertions)] if assertions else [])

    def _score(self, verdicts: list[bool]) -> float:
        if not verdicts:
            return 0.0
        if self.mode == "all_or_nothing":
            return float(all(verdicts))
        return sum(verdicts) / len(verdicts)


def _build_sandbox(timeout_s: float | None, memory_mb: int | None, workers: int | None, isolation: str | None) -> Sandbox:
    """The reward's own sandbox; raises IsolationUnavailable now (before any model loads) if isolation is missing."""
    wall = 5.0 if timeout_s is None else timeout_s
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 < wall < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    limits = SandboxLimits(wall_time_s=float(wall), cpu_time_s=math.ceil(wall), memory_mb=1024 if memory_mb is None else memory_mb)
    return Sandbox(limits, workers=workers, isolation="auto" if isolation is None else isolation)
