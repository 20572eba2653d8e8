"""Judge servers (cohort.rewards.sandbox.judges): one judge sandbox forks a fresh judge per program.

What must hold: a batch starts at most one server per worker and a fresh candidate sandbox per
program; each forked judge runs under the layer's whole seccomp filter (the server's own lets it
fork, a judge's must not where the layer forbids processes); a judge that overruns its limit in C
takes its whole server with it, and the next program gets a fresh one and is scored right;
Sandbox.close() kills the idle servers and leaves nothing on disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from system_deps import requires_bubblewrap

from cohort.rewards.code import CodeExecutionReward
from cohort.rewards.sandbox.runner import Sandbox, SandboxLimits
from cohort.rewards.sandbox.verdict import AssertionTest, judge_pool, run_assertion_tests

pytestmark = pytest.mark.timeout(120)

SQUARE = "def f(x):\n    return x * x\n"
SQUARE_TESTS = ["assert f(2) == 4", "assert f(3) == 9", "assert f(-1) == 1"]
# Trusted test code that asks whether the process running it (the judge) can start a process.
JUDGE_FORKS = """\
import os

def judge_can_fork():
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return True

assert f(2) == 4 and not judge_can_fork()
"""


@pytest.fixture
def tmp_root():
    root = Path(tempfile.mkdtemp(prefix="cohort-test-judges-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _sandbox(tmp_root: Path, isolation: str = "auto", wall_time_s: float = 3.0) -> Sandbox:
    limits = SandboxLimits(wall_time_s=wall_time_s, cpu_time_s=2, memory_mb=256, max_processes=16, max_output_bytes=1 << 16)
    return Sandbox(limits, workers=2, isolation=isolation, tmp_root=tmp_root)


@requires_bubblewrap
def test_a_batch_starts_one_server_per_worker_and_a_candidate_per_program(tmp_root):
    sandbox = _sandbox(tmp_root)
    reward = CodeExecutionReward(sandbox=sandbox)
    completions = [f"```python\n# attempt {i}\n{SQUARE}```" for i in range(12)]  # distinct: no dedup
    before = sandbox.sandboxes_started
    assert reward(None, completions, tests=[SQUARE_TESTS] * 12) == [1.0] * 12
    assert sandbox.sandboxes_started - before == 12  # one candidate sandbox per program, never shared
    assert 1 <= judge_pool(sandbox).started <= sandbox.workers
    assert reward(None, [c + "\n" for c in completions], tests=[SQUARE_TESTS] * 12) == [1.0] * 12
    assert judge_pool(sandbox).started <= sandbox.workers  # the servers were reused
    sandbox.close()
    assert list(tmp_root.iterdir()) == []


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_forked_judges_run_under_the_layers_whole_filter(tmp_root, isolation):
    """The server may fork; a judge it forks stacks the layer's filter, which forbids processes where the layer does."""
    if isolation == "auto" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    sandbox = _sandbox(tmp_root, isolation)
    if not sandbox._layer.no_fork:
        pytest.skip(f"{sandbox.isolation_kind} here bounds processes by RLIMIT_NPROC, not by the filter")
    try:
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest(JUDGE_FORKS)]) == [True]
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest(JUDGE_FORKS.replace("not judge", "judge"))]) == [False]
    finally:
        sandbox.close()


@requires_bubblewrap
def test_a_judge_stuck_in_c_takes_its_server_and_the_next_program_gets_a_fresh_one(tmp_root):
    sandbox = _sandbox(tmp_root, wall_time_s=0.5)
    stuck = AssertionTest("assert f(2) == 4\nassert sum(range(10**12)) > 0")  # minutes in C: no alarm reaches it
    ok = AssertionTest("assert f(3) == 9")
    try:
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(2) == 4")]) == [True]
        assert judge_pool(sandbox).started == 1
        assert run_assertion_tests(sandbox, SQUARE, [ok, stuck, ok]) == [True, False, True]
        assert judge_pool(sandbox).started >= 2  # the stuck judge's server was killed; the next test got a new one
        started = judge_pool(sandbox).started
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(-1) == 1")]) == [True]
        assert judge_pool(sandbox).started == started
    finally:
        sandbox.close()
    assert list(tmp_root.iterdir()) == []


@requires_bubblewrap
def test_close_kills_the_idle_servers(tmp_root):
    sandbox = _sandbox(tmp_root)
    assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(2) == 4")]) == [True]
    pool = judge_pool(sandbox)
    pids = [server.process._proc.pid for server in pool._idle]
    assert len(pids) == 1 and os.path.exists(f"/proc/{pids[0]}")
    sandbox.close()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert list(tmp_root.iterdir()) == []
    assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(3) == 9")]) == [True]  # a new pool
    sandbox.close()


@requires_bubblewrap
def test_a_forked_host_neither_uses_nor_kills_its_parents_servers(tmp_root):
    """A child forked from the host (a data loader, a worker) starts servers of its own; its exit leaves the parent's alive."""
    sandbox = _sandbox(tmp_root)
    try:
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(2) == 4")]) == [True]
        parent_server = judge_pool(sandbox)._idle[0]
        pid = os.fork()
        if pid == 0:  # the child: its own server, then it closes everything it has
            ok = False
            try:
                ok = run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(3) == 9")]) == [True]
                ok = ok and judge_pool(sandbox).started == 1
                sandbox.close()
            finally:
                os._exit(0 if ok else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert judge_pool(sandbox)._idle == [parent_server] and os.path.exists(f"/proc/{parent_server.process._proc.pid}")
        assert run_assertion_tests(sandbox, SQUARE, [AssertionTest("assert f(-1) == 1")]) == [True]
        assert judge_pool(sandbox).started == 1
    finally:
        sandbox.close()
