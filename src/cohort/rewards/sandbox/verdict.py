"""The verdict of assertion tests: decided by a judge sandbox that calls the program in another sandbox.

For one completion the host starts a *candidate* sandbox, which runs the program's top level, then
answers calls, and has a *judge* forked for it in a judge sandbox (a judge server, see
:mod:`cohort.rewards.sandbox.judges`), under the same layer, connected only by two pipes the host
created. The judge runs the tests (trusted dataset code) against a proxy of the program's entry
point and decodes every answer into plain builtin data (see :mod:`cohort.rewards.sandbox.harness`,
the harness both run). The tests reach the judge through a descriptor the host opened (never a
file), and the judge reports one pass/fail per test over a pipe only it holds; nothing the
candidate prints, returns or patches is read as a verdict.

One pair serves all of a completion's tests. The judge limits each test to the sandbox's
``wall_time_s`` with SIGALRM; the host also gives each test that long plus :data:`KILL_MARGIN_S`
to report, and kills the pair (the judge's whole server) when it does not (a long call into C,
which no signal interrupts). If the candidate dies, hangs or breaks the protocol during test k, or
the judge is killed, test k fails and the remaining tests run with a fresh pair, so one bad test
cannot hide the others. An optional ``deadline`` (the completion's budget) bounds everything: past
it, :class:`BudgetExceeded`. The host tears the candidate sandbox down after every pair; a judge
server is kept for the next program only when its pair ended cleanly and its judge exited.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import functools
import json
import marshal
import os
import select
import sys
import threading
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cohort.rewards.sandbox import codec, harness
from cohort.rewards.sandbox.judges import JudgePool, JudgeServer, pool_for
from cohort.rewards.sandbox.runner import (
    BudgetExceeded,
    Sandbox,
    SandboxError,
    SandboxProcess,
)

PROGRAM_NAME = "main.py"
STARTUP_SLACK_S = 2.0  # on top of the per-test limits: two interpreters starting on a busy machine
KILL_MARGIN_S = 1.0  # a test's report may come this late after its limit before the host kills the judge


@dataclass(frozen=True)
class AssertionTest:
    """Test code (usually ``assert`` statements) that the judge runs against the program.

    ``setup`` is trusted code run in the judge first (MBPP's test imports and setup code,
    HumanEval's prompt with the helpers its checks use). With ``entry_point`` (HumanEval), ``code``
    defines ``check(candidate)``, which is called with the program's function of that name; without
    it, the entry point is decided from the asserts (see :func:`ranked_names`).
    """

    code: str
    setup: str = ""
    entry_point: str | None = None


_AST_LOCK = threading.Lock()
"""Held around every parse here: a batch judges programs on several threads, and CPython 3.11's
parser is not safe to enter from two threads at once ("SystemError: AST constructor recursion depth
mismatch")."""


def parse(source: str) -> ast.Module:
    with _AST_LOCK:
        return ast.parse(source)


@functools.cache
def harness_source() -> str:
    """The one script both sandboxes of a pair run: the codec's source, then the harness' without its import of the codec."""
    lines = Path(harness.__file__).read_text(encoding="utf-8").splitlines(keepends=True)
    for node in parse("".join(lines)).body:
        if isinstance(node, ast.ImportFrom) and node.module == codec.__name__:
            lines[node.lineno - 1 : node.end_lineno] = ["\n"] * (node.end_lineno - node.lineno + 1)
    return Path(codec.__file__).read_text(encoding="utf-8") + "\n\n" + "".join(lines)


@functools.cache
def harness_file(python: str) -> tuple[str, str | bytes]:
    """(name, content) of the harness for the sandbox interpreter ``python``.

    For this very interpreter it is compiled once here and marshalled (the launcher runs a *.code
    file as a code object), which saves compiling it in every sandbox; otherwise the source.
    """
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return "harness.py", harness_source()
    source = harness_source()
    with _AST_LOCK:
        return "harness.code", marshal.dumps(compile(source, "/sandbox/harness.py", "exec", dont_inherit=True))


def referenced_names(code: str) -> list[str]:
    """The names ``code`` reads but does not bind itself, in order of first use ([] if it does not parse)."""
    try:
        tree = parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    loads = [node for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)]
    loads.sort(key=lambda node: (node.lineno, node.col_offset))
    return list(dict.fromkeys(node.id for node in loads if node.id not in bound))


def ranked_names(codes: Sequence[str]) -> list[str]:
    """The names a problem's asserts read, most used first (by how many asserts use them), then by first use.

    The judge takes the first one that nothing but the program could supply as the entry point, so
    a plain MBPP assert list (``assert f(2) == 4``, ``assert set(f(x)) == {...}``) names its function.
    """
    per_test = [referenced_names(code) for code in codes]
    uses = collections.Counter(name for names in per_test for name in set(names))
    first: dict[str, tuple[int, int]] = {}
    for i, names in enumerate(per_test):
        for j, name in enumerate(names):
            first.setdefault(name, (i, j))
    return sorted(uses, key=lambda name: (-uses[name], first[name]))


def _payloads(tests: Sequence[AssertionTest]) -> list[dict]:
    """The tests as the judge reads them, each with the names it may bind (ranked across the plain asserts)."""
    ranked = ranked_names([test.code for test in tests if not test.entry_point])
    return [
        {**dataclasses.asdict(test), "names": referenced_names(test.code) if test.entry_point else ranked}
        for test in tests
    ]  # fmt: skip


def run_assertion_tests(
    sandbox: Sandbox, program: str, tests: Sequence[AssertionTest], *, deadline: float | None = None
) -> list[bool]:
    """Whether ``program`` passes each test, as reported by the judge; a test it never reported fails.

    ``deadline`` (a ``time.monotonic()`` time) is the completion's budget: when it passes before
    every test has a verdict, BudgetExceeded. SandboxError when a sandbox could not be started.
    """
    payloads = _payloads(tests)
    per_test_s = sandbox.limits.wall_time_s
    end = time.monotonic() + per_test_s * (len(payloads) + 1) + STARTUP_SLACK_S
    if deadline is not None:
        end = min(end, deadline)
    verdicts: list[bool] = []
    while len(verdicts) < len(payloads) and time.monotonic() < end:
        got, ending = _run_pair(sandbox, program, payloads[len(verdicts) :], end)
        verdicts += got
        if ending == "deadline":
            break
        if len(verdicts) < len(payloads) and ending != "stop":
            verdicts.append(False)  # the pair broke, or the judge overran, during this test
    if len(verdicts) < len(payloads) and deadline is not None and time.monotonic() >= deadline:
        raise BudgetExceeded(f"{len(payloads) - len(verdicts)} of {len(payloads)} tests undecided at the budget's end")
    return verdicts + [False] * (len(payloads) - len(verdicts))


def _run_pair(sandbox: Sandbox, program: str, payloads: list[dict], end: float) -> tuple[list[bool], str]:
    """Run the tests on one candidate sandbox and a judge forked by a judge server: (the verdicts reported,
    how it ended: see :func:`_read_verdicts`)."""
    data = json.dumps({"tests": payloads}).encode()
    wall = max(0.05, min(sandbox.limits.wall_time_s, end - time.monotonic()))  # bounds the wait for bwrap to come up
    cpu_s = sandbox.limits.cpu_time_s * (len(payloads) + 1)
    limits = dataclasses.replace(sandbox.limits, wall_time_s=wall, cpu_time_s=cpu_s)
    harness_name, script = harness_file(sandbox.python)
    opened: list[int] = []
    candidate: SandboxProcess | None = None
    server: JudgeServer | None = None
    ending = "broken"
    try:
        request_r, request_w = _pipe(opened)
        response_r, response_w = _pipe(opened)
        verdict_r, verdict_w = _pipe(opened)
        tests_fd = _readable_copy(data, opened)
        server = judge_pool(sandbox).dispatch([tests_fd, verdict_w, request_w, response_r], sandbox.limits.wall_time_s, cpu_s)
        candidate_args = ["candidate", PROGRAM_NAME, str(request_r), str(response_w)]
        files = {harness_name: script, PROGRAM_NAME: program}
        candidate = sandbox.start(files, harness_name, candidate_args, pass_fds=[request_r, response_w], limits=limits)
        for fd in (request_r, request_w, response_r, response_w, verdict_w, tests_fd):
            _close(fd, opened)  # the sandboxes hold their ends now; the host keeps only the verdict
        verdicts, ending = _read_verdicts(verdict_r, len(payloads), sandbox.limits.wall_time_s, end)
    finally:
        if candidate is not None:
            candidate.close()
        for fd in list(opened):
            _close(fd, opened)
        if server is not None:
            judge_pool(sandbox).release(server, clean=ending in ("done", "stop"))
    if ending != "deadline" and not candidate.started:
        raise SandboxError("the sandbox did not start the assertion-test program")
    return verdicts, ending


def judge_pool(sandbox: Sandbox) -> JudgePool:
    """The judge servers of ``sandbox`` (made on first use; killed by ``sandbox.close()``, or when it is collected)."""
    return pool_for(sandbox, lambda: JudgePool(sandbox._layer, sandbox.python, sandbox.limits, sandbox.tmp_root, harness_file(sandbox.python)))


def _read_verdicts(fd: int, count: int, per_test_s: float, end: float) -> tuple[list[bool], str]:
    """Read "K pass|fail" lines until "done" or "stop"; (verdicts, how it ended).

    Endings: "done" (every verdict), "stop" (the judge gave up on the candidate after its last
    verdict), "broken" (the judge died or wrote nonsense), "overran" (a test's report did not come
    within its limit + KILL_MARGIN_S), "deadline" (``end`` passed).
    """
    verdicts: list[bool] = []
    buffer = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    line_due = time.monotonic() + STARTUP_SLACK_S + 2 * per_test_s + KILL_MARGIN_S  # start-up, the program's top level, test 0
    while True:
        due = min(line_due, end)
        remaining = due - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return verdicts, "deadline" if due == end else "overran"
        chunk = os.read(fd, 4096)
        buffer += chunk
        if not chunk or len(buffer) > 64 + 16 * count:
            return verdicts, "broken"
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line in (b"done", b"stop"):
                return verdicts, "done" if line == b"done" and len(verdicts) == count else ("stop" if line == b"stop" else "broken")
            index, _, word = line.partition(b" ")
            if len(verdicts) == count or index != b"%d" % len(verdicts) or word not in (b"pass", b"fail"):
                return verdicts, "broken"
            verdicts.append(word == b"pass")
            line_due = time.monotonic() + per_test_s + KILL_MARGIN_S


def _pipe(opened: list[int]) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    opened += [read_end, write_end]
    return read_end, write_end


def _readable_copy(data: bytes, opened: list[int]) -> int:
    """A descriptor reading ``data`` from the start, with no path anyone could open (memfd, or an unlinked file)."""
    try:
        fd = os.memfd_create("cohort-tests", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = os.dup(tempfile.TemporaryFile().fileno())
    opened.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _close(fd: int, opened: list[int]) -> None:
    if fd in opened:
        opened.remove(fd)
        os.close(fd)
