"""Code-execution reward: run the program in each completion against its problem's tests.

The tests of a problem come in a dataset column (default ``tests``), as a list, a dict or a JSON string:

* stdin/stdout pairs (APPS, CodeContests): ``[{"input": "1 2\\n", "output": "3\\n"}, ...]``, or
  the column form ``{"inputs": [...], "outputs": [...]}`` (``input``/``output`` also accepted);
  the program reads the input on stdin (the only thing of the test it ever sees); it passes when
  it exits 0 and its output equals the expected one after stripping the whole text and the end of
  every line. Each input is its own process;
* assertions (MBPP): ``["assert f(2) == 4", ...]``, or MBPP's row form ``{"test_list": [...],
  "test_imports": [...], "test_setup_code": "..."}``; the program supplies one function, the
  entry point: the first name the asserts use (most used first) that neither the asserts, the
  imports and setup code, the builtins nor the program's own stdlib imports supply;
* HumanEval: ``{"test": "def check(candidate): ...", "entry_point": "f"}`` (an optional
  ``"prompt"`` is run in the judge first, so that helpers the checks call are the dataset's own;
  without it, a check that calls a prompt helper fails: the program never supplies helpers).

Assertion tests never run in the program's process: a judge sandbox runs them against a proxy of
the program's entry point in a second sandbox and reports the verdict to the host (see
:mod:`cohort.rewards.sandbox.verdict`), so nothing the program prints, returns or patches can make a
failing test pass. All isolation lives in :mod:`cohort.rewards.sandbox.runner`; this module only
extracts, parses, schedules and scores.

Failure is 0, infrastructure is None: every completion has a wall-clock budget (``budget_s``) for
all of its tests, sandbox start-ups and retries; a program that is too slow, too big, crashes or
runs past its budget scores 0. Only a problem whose tests cannot be read, or a sandbox that cannot
start, scores None, and only for the completions it concerns.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from cohort.rewards.base import RewardTimeout
from cohort.rewards.sandbox.runner import (
    BudgetExceeded,
    ExecutionResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
)
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
DEFAULT_TIMEOUT_S = 1.0  # one test (one stdin/stdout run, or one assertion test in the judge)
DEFAULT_BUDGET_S = 1.5  # one completion: 64 completions on 2 workers take at most 32 x (1.5 s + teardown) < 60 s
TEARDOWN_S = 0.25  # allowance for killing and removing a completion's last sandboxes after its budget
MIN_RUN_S = 0.2  # less time than this left for a completion: it is not started (nothing could be scored)
_CUT = "cut"  # a completion the call's deadline (not its own budget) stopped: the scorer retries it alone
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
    tests = _parse_spec(spec)
    for i, test in enumerate(tests):
        if isinstance(test, AssertionTest):
            for part, code in (("code", test.code), ("setup", test.setup)):
                try:
                    compile(code, f"<test {i}>", "exec", dont_inherit=True)
                except (SyntaxError, ValueError) as err:
                    raise InvalidTestsError(f"the {part} of test {i} is not valid Python: {err}") from None
    return tests


def _parse_spec(spec: Any) -> list[CodeTest]:
    """The tests of one specification, by its form (not yet checked for syntax)."""
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
    """All the sandbox work of one completion: its program against every test of its problem."""

    program: str
    tests: tuple[CodeTest, ...]

    def run(self, sandbox: Sandbox, deadline: float) -> list[bool]:
        """One verdict per test, stdin/stdout tests first; BudgetExceeded past ``deadline`` (monotonic)."""
        verdicts = []
        for test in self.tests:
            if isinstance(test, StdioTest):
                verdicts.append(self._run_stdio(sandbox, test, deadline))
        assertions = tuple(test for test in self.tests if isinstance(test, AssertionTest))
        if assertions:
            verdicts += run_assertion_tests(sandbox, self.program, assertions, deadline=deadline)
        return verdicts

    def _run_stdio(self, sandbox: Sandbox, test: StdioTest, deadline: float) -> bool:
        """Whether one stdin/stdout run passes; its wall-clock limit is cut to what is left of the budget."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BudgetExceeded("no time left for the next test")
        wall = min(sandbox.limits.wall_time_s, remaining)
        result = sandbox.run(self.program, test.input, wall_time_s=wall)
        if result.timed_out and wall < sandbox.limits.wall_time_s:
            raise BudgetExceeded("a test ran into the end of the budget")
        return _stdio_passed(test, result)


class CodeExecutionReward:
    """TRL-compatible reward: the share of its problem's tests a completion's program passes.

    ``mode="fraction"`` scores passed/total, ``"all_or_nothing"`` 1.0 only if all pass. Failure is
    0, infrastructure is None: a program that fails, crashes, runs out of memory, times out or uses
    up its ``budget_s`` scores 0; a problem whose tests cannot be read, or a sandbox that cannot
    start, scores None (that completion only).

    Time: each test may take ``timeout_s`` (default 1 s); each completion, all its tests, sandbox
    start-ups and retries included, at most ``budget_s`` (default 1.5 s), past which it scores 0.
    A batch runs its distinct completions on ``workers`` threads (default: the CPU count), each
    completion on one thread, so it takes at most :meth:`worst_case_s` = ceil(N / workers) x
    (budget_s + TEARDOWN_S): 64 completions on 2 workers, 56 s, under the scorer's default
    ``reward.timeout_s`` of 60 s. One completion alone takes at most budget_s + TEARDOWN_S.

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
        budget_s: float = DEFAULT_BUDGET_S,
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
        if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not 0 < budget_s < math.inf:
            raise ValueError(f"budget_s must be a finite number of seconds > 0, got {budget_s!r}")
        if sandbox is not None:
            if any(value is not None for value in (timeout_s, memory_mb, workers, isolation)):
                raise ValueError("give limits either through sandbox= or through timeout_s/memory_mb/workers/isolation, not both")
            self.sandbox = sandbox
        else:
            self.sandbox = _build_sandbox(timeout_s, memory_mb, workers, isolation)
        self.mode = mode
        self.budget_s = float(budget_s)
        self._scored: dict[_Job, float | None] = {}  # the last batch's scores, for the scorer's retries of it
        self.tests_column = tests_column
        self.require_code_block = require_code_block
        self.max_tests = max_tests
        self.__name__ = self.name = "code_execution"

    @property
    def isolation(self) -> str:
        """The sandbox's isolation in words, for the run log."""
        return self.sandbox.isolation

    def worst_case_s(self, batch_size: int) -> float:
        """The longest a call with ``batch_size`` completions can take (every one using its whole budget)."""
        return math.ceil(batch_size / self.sandbox.workers) * (self.budget_s + TEARDOWN_S)

    def extract_answer(self, completion: str) -> str | None:
        """The completion's program, stripped (what majority voting compares)."""
        program = extract_program(completion, require_block=self.require_code_block)
        return program.strip() if program is not None and program.strip() else None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """Score each completion against the tests in its row of ``columns[tests_column]``."""
        return self._score_batch(completions, columns, None)

    def score_within(self, seconds: float, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """The same scores, returned within ``seconds``: the scorer's hard-deadline protocol (cohort.rewards.base).

        Each completion has its budget or what is left of the call, whichever ends first. Alone in a
        call (the scorer's retries), a completion the call's end stops scores 0, like one past its
        budget; in a batch that cannot finish in time, RewardTimeout, and the scorer retries the
        unfinished ones one by one (those already scored are remembered, not run again).
        """
        return self._score_batch(completions, columns, time.monotonic() + seconds - TEARDOWN_S)

    def _score_batch(self, completions: Sequence[str], columns: dict[str, Any], deadline: float | None) -> list[float | None]:
        if self.tests_column not in columns:
            raise KeyError(f"code_execution needs the dataset column {self.tests_column!r}; got {sorted(columns)}")
        specs = columns[self.tests_column]
        if len(specs) != len(completions):
            raise ValueError(f"column {self.tests_column!r} has {len(specs)} rows for {len(completions)} completions")
        for i, completion in enumerate(completions):
            if not isinstance(completion, str):
                raise TypeError(f"completions[{i}] must be a str, got {type(completion).__name__}")
        plans = [self._plan(i, completion, spec) for i, (completion, spec) in enumerate(zip(completions, specs))]
        unique = list(dict.fromkeys(plan for plan in plans if isinstance(plan, _Job)))  # same program, same tests: run once
        if len(unique) > 1:
            self._scored = {}  # a new batch: forget the last one's (kept for the scorer's retries of it)
        to_run = [job for job in unique if job not in self._scored]
        alone = len(to_run) == 1
        outcomes = [functools.partial(self._outcome, job, deadline, alone) for job in to_run]
        results = dict(zip(to_run, self.sandbox.parallel(outcomes)))
        if len(self._scored) > 4096:  # single-completion calls only add; keep the memory bounded
            self._scored = {}
        self._scored.update((job, score) for job, score in results.items() if score != _CUT)
        cut = sum(score == _CUT for score in results.values())
        if cut:
            raise RewardTimeout(f"{cut} of {len(unique)} completions could not be scored before the call's deadline")
        return [self._scored[plan] if isinstance(plan, _Job) else plan for plan in plans]

    def _plan(self, row: int, completion: str, spec: Any) -> _Job | float | None:
        """The job that scores one completion; None if its tests are unreadable, 0.0 if it has no program."""
        try:
            tests = parse_tests(spec)[: self.max_tests]
        except InvalidTestsError as err:
            logger.warning("code_execution: row %d cannot be scored: %s", row, err)
            return None
        program = extract_program(completion, require_block=self.require_code_block)
        if program is None or not program.strip():
            return 0.0
        return _Job(program, tuple(tests))

    def _outcome(self, job: _Job, deadline: float | None, alone: bool) -> float | str | None:
        """One completion's score: its verdicts; 0.0 past its own time; None if a sandbox could not start.

        With a call ``deadline``: _CUT when that deadline, not the completion's budget, stopped it
        in a batch (or came before it could start).
        """
        start = time.monotonic()
        own = start + self.budget_s
        end = own if deadline is None else min(own, deadline)
        if end - start < MIN_RUN_S and end < own:
            return None if alone else _CUT
        try:
            verdicts = job.run(self.sandbox, end)
        except BudgetExceeded:
            return 0.0 if end == own or alone else _CUT
        except (SandboxError, OSError) as err:  # the machinery failed, not the program: this completion only
            logger.warning("code_execution: a completion could not be scored: %s", err)
            return None
        return self._score(verdicts)

    def _score(self, verdicts: list[bool]) -> float:
        if not verdicts:
            return 0.0
        if self.mode == "all_or_nothing":
            return float(all(verdicts))
        return sum(verdicts) / len(verdicts)


def _build_sandbox(timeout_s: float | None, memory_mb: int | None, workers: int | None, isolation: str | None) -> Sandbox:
    """The reward's own sandbox; raises IsolationUnavailable now (before any model loads) if isolation is missing."""
    wall = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 < wall < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    limits = SandboxLimits(wall_time_s=float(wall), cpu_time_s=math.ceil(wall), memory_mb=1024 if memory_mb is None else memory_mb)
    return Sandbox(limits, workers=workers, isolation="auto" if isolation is None else isolation)
