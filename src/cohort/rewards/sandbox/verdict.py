"""The verdict of assertion tests: decided by a judge sandbox that calls the program in another sandbox.

For one completion the host starts two sandboxes under the same layer, connected only by two pipes
it created: the *candidate* runs the program's top level, then answers calls; the *judge* runs the
tests (trusted dataset code) against proxies of the program's functions and decodes every answer
into plain builtin data (see :mod:`cohort.rewards.sandbox.harness`, the harness both run). The tests reach the
judge through a descriptor the host opened (never a file), and the judge reports one pass/fail per
test over a pipe only it holds; nothing the candidate prints, returns or patches is read as a verdict.

One pair serves all of a completion's tests. The judge limits each test to the sandbox's
``wall_time_s``; if the candidate dies, hangs or breaks the protocol during test k, test k fails and
the remaining tests run with a fresh pair, so one crashing test cannot hide the others. The host
keeps an overall wall-clock limit and tears both sandboxes down after every pair.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import marshal
import os
import select
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cohort.rewards.sandbox import harness as judge
from cohort.rewards.sandbox.runner import Sandbox, SandboxError, SandboxProcess

PROGRAM_NAME = "main.py"
_STARTUP_SLACK_S = 2.0  # on top of the per-test limits: two interpreters starting on a busy machine


@dataclass(frozen=True)
class AssertionTest:
    """Test code (usually ``assert`` statements) that the judge runs against the program.

    ``setup`` is trusted code run in the judge first (MBPP's test imports, HumanEval's prompt with
    the helpers its checks use). With ``entry_point`` (HumanEval), ``code`` defines
    ``check(candidate)``, which is called with the program's function of that name.
    """

    code: str
    setup: str = ""
    entry_point: str | None = None


@functools.lru_cache(maxsize=None)
def harness_source() -> str:
    """The source of the in-sandbox harness, copied into both sandboxes of a pair."""
    return Path(judge.__file__).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def harness_file(python: str) -> tuple[str, str | bytes]:
    """(name, content) of the harness for the sandbox interpreter ``python``.

    For this very interpreter it is compiled once here and marshalled (the launcher runs a *.code
    file as a code object), which saves compiling it in every sandbox; otherwise the source.
    """
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return "harness.py", harness_source()
    return "harness.code", marshal.dumps(compile(harness_source(), "/sandbox/harness.py", "exec", dont_inherit=True))


def run_assertion_tests(sandbox: Sandbox, program: str, tests: Sequence[AssertionTest]) -> list[bool]:
    """Whether ``program`` passes each test, as reported by the judge; a test it never reported fails."""
    tests = list(tests)
    per_test_s = sandbox.limits.wall_time_s
    deadline = time.monotonic() + per_test_s * (len(tests) + 1) + _STARTUP_SLACK_S
    verdicts: list[bool] = []
    while len(verdicts) < len(tests) and time.monotonic() < deadline:
        got, clean = _run_pair(sandbox, program, tests[len(verdicts) :], deadline)
        verdicts += got
        if len(verdicts) < len(tests) and not (clean and got):
            verdicts.append(False)  # the pair broke during this test
    return verdicts + [False] * (len(tests) - len(verdicts))


def _run_pair(sandbox: Sandbox, program: str, tests: list[AssertionTest], deadline: float) -> tuple[list[bool], bool]:
    """Run ``tests`` on one candidate/judge pair: (the verdicts reported, whether the judge ended cleanly)."""
    payload = json.dumps({"tests": [dataclasses.asdict(test) for test in tests]}).encode()
    limits = dataclasses.replace(sandbox.limits, cpu_time_s=sandbox.limits.cpu_time_s * (len(tests) + 1))
    harness_name, harness = harness_file(sandbox.python)
    opened: list[int] = []
    processes: list[SandboxProcess] = []
    try:
        request_r, request_w = _pipe(opened)
        response_r, response_w = _pipe(opened)
        verdict_r, verdict_w = _pipe(opened)
        tests_fd = _readable_copy(payload, opened)
        judge_fds = [tests_fd, verdict_w, request_w, response_r]
        judge_args = ["judge", *map(str, judge_fds), repr(sandbox.limits.wall_time_s)]
        processes.append(sandbox.start({harness_name: harness}, harness_name, judge_args, pass_fds=judge_fds, limits=limits, role="judge"))
        candidate_args = ["candidate", PROGRAM_NAME, str(request_r), str(response_w)]
        files = {harness_name: harness, PROGRAM_NAME: program}
        processes.append(sandbox.start(files, harness_name, candidate_args, pass_fds=[request_r, response_w], limits=limits))
        for fd in (request_r, request_w, response_r, response_w, verdict_w, tests_fd):
            _close(fd, opened)  # the sandboxes hold their ends now; the host keeps only the verdict
        verdicts, clean = _read_verdicts(verdict_r, len(tests), deadline)
    finally:
        for process in reversed(processes):
            process.close()
        for fd in list(opened):
            _close(fd, opened)
    if time.monotonic() < deadline and not all(process.started for process in processes):
        raise SandboxError("the sandbox did not start the assertion-test judge or the program")
    return verdicts, clean


def _read_verdicts(fd: int, count: int, deadline: float) -> tuple[list[bool], bool]:
    """Read "K pass|fail" lines, then "done" or "stop"; anything else or a timeout ends the pair uncleanly."""
    verdicts: list[bool] = []
    buffer = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return verdicts, False
        chunk = os.read(fd, 4096)
        buffer += chunk
        if not chunk or len(buffer) > 64 + 16 * count:
            return verdicts, False
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line in (b"done", b"stop"):
                return verdicts, line == b"stop" or len(verdicts) == count
            index, _, word = line.partition(b" ")
            if len(verdicts) == count or index != b"%d" % len(verdicts) or word not in (b"pass", b"fail"):
                return verdicts, False
            verdicts.append(word == b"pass")


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
