"""The code-execution reward: program extraction, test formats, scoring, and hostile programs.

Programs really run in the sandbox (the default isolation: bubblewrap; tests that run programs are
marked ``requires_bubblewrap``). The hostile suite runs each attack once in one batch, next to a
correct program, and then checks the host. Reward hacking has its own suite (test_reward_hacking.py).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from system_deps import requires_bubblewrap

from cohort.rewards.base import NamedReward, RewardScorer
from cohort.rewards.code import (
    AssertionTest,
    CodeExecutionReward,
    InvalidTestsError,
    StdioTest,
    extract_program,
    outputs_match,
    parse_tests,
)
from cohort.rewards.registry import build_reward
from cohort.rewards.sandbox.runner import IsolationUnavailable, Sandbox, SandboxLimits

pytestmark = pytest.mark.timeout(60)

SUM_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4"}, {"input": "5 5", "output": "10  \n\n"}]
SUM_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)"
ONE_TEST = SUM_TESTS[:1]  # attacks that run into a limit get one test each, to keep the suite fast
SQUARE_TESTS = ["assert f(2) == 4", "assert f(3) == 9", "assert f(-1) == 1"]


def _dedent(source: str) -> str:
    return textwrap.dedent(source).strip() + "\n"


def _fenced(program: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{program}\n```\nDone."


@pytest.fixture(scope="module")
def tmp_root():
    root = Path(tempfile.mkdtemp(prefix="cohort-test-reward-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox(tmp_root):
    limits = SandboxLimits(wall_time_s=3.0, cpu_time_s=2, memory_mb=256, max_processes=16, max_output_bytes=1 << 16)
    return Sandbox(limits, workers=2, tmp_root=tmp_root)


@pytest.fixture
def reward(sandbox, tmp_root):
    yield CodeExecutionReward(sandbox=sandbox)
    assert list(tmp_root.iterdir()) == [], "throwaway directories left behind"


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("```python\nprint(1)\n```", "print(1)"),
        ("```py\nprint(1)\n```\ntext\n```python\nprint(2)\n```", "print(2)"),  # the last python block
        ("```python\nprint(1)\n```\n```text\nsample output\n```", "print(1)"),  # python beats a later block
        ("```\nprint(3)\n```\nand\n```\nprint(4)\n```", "print(4)"),  # no python block: the last block
        ("print(5)", "print(5)"),  # no block: the whole completion
        ("Sure:\n```python\nprint(6)\nprint(7)", "print(6)\nprint(7)"),  # cut before the closing fence
        ("```Python3\nx = 1\n\n\nprint(x)\n```", "x = 1\n\n\nprint(x)"),
    ],
)
def test_extract_program(completion, expected):
    assert extract_program(completion) == expected


def test_extract_program_can_require_a_block():
    assert extract_program("print(5)", require_block=True) is None
    assert extract_program("```\nprint(5)\n```", require_block=True) == "print(5)"


# ---------------------------------------------------------------- output comparison and test specs


@pytest.mark.parametrize(
    "actual, expected, same",
    [
        ("3\n", "3", True),
        ("1 2  \n3\t\n\n\n", "1 2\n3", True),  # trailing whitespace and blank lines at the end
        ("\n\n1\n", "1", True),
        ("1\n\n2", "1\n2", False),  # a blank line inside the output counts
        ("1 2", "1  2", False),  # inner whitespace counts
        ("", "", True),
        ("3", "4", False),
    ],
)
def test_outputs_match(actual, expected, same):
    assert outputs_match(actual, expected) is same


def test_parse_tests_reads_every_format():
    stdio = [StdioTest("1 2\n", "3\n")]
    assert parse_tests([{"input": "1 2\n", "output": "3\n"}]) == stdio
    assert parse_tests(json.dumps([{"input": "1 2\n", "output": "3\n"}])) == stdio
    assert parse_tests({"inputs": ["1 2\n"], "outputs": ["3\n"]}) == stdio  # APPS
    assert parse_tests(json.dumps({"input": ["1 2\n"], "output": ["3\n"]})) == stdio  # CodeContests
    assert parse_tests(["assert f(1) == 1"]) == [AssertionTest("assert f(1) == 1")]
    mixed = parse_tests(["assert True", {"input": "", "output": ""}])
    assert mixed == [AssertionTest("assert True"), StdioTest("", "")]
    mbpp = {"test_list": ["assert math.isclose(f(1), 2.0)"], "test_imports": ["import math"], "test_setup_code": "K = 2"}
    assert parse_tests(mbpp) == [AssertionTest("assert math.isclose(f(1), 2.0)", setup="import math\nK = 2")]
    humaneval = {"test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "f", "task_id": "X/0"}
    assert parse_tests(json.dumps(humaneval)) == [AssertionTest(humaneval["test"], entry_point="f")]
    assert parse_tests({**humaneval, "prompt": "def f(x):\n    pass\n"})[0].setup == "def f(x):\n    pass\n"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("not json", "not valid JSON"),
        ([], "no tests"),
        (None, "must be a list"),
        (42, "must be a list"),
        ([{"input": "1"}], "test 0"),
        (["assert True", ""], "test 1"),
        ([{"input": 1, "output": "1"}], "test 0"),
        ({"inputs": ["1"], "outputs": ["1", "2"]}, "equal length"),
        ({"inputs": ["1"], "outputs": [1]}, "must be a str"),
        ({"inputs": ["1"], "outputs": ["1"], "fn_name": "solve"}, "call-based"),
        ({"cases": []}, "needs lists"),
        ({"test": "assert True", "entry_point": "f"}, "must define check"),
        ({"test": "def check(c): pass", "entry_point": "not a name"}, "identifier 'entry_point'"),
        ({"entry_point": "f"}, "non-empty str 'test'"),
        ({"test": "def check(c): pass", "entry_point": "f", "prompt": 3}, "'prompt' must be a str"),
        ({"test_list": []}, "'test_list' must be a non-empty list"),
        ({"test_list": ["assert True"], "test_imports": "import math"}, "'test_imports' must be a list"),
    ],
)
def test_parse_tests_rejects_malformed_specs(spec, message):
    with pytest.raises(InvalidTestsError, match=message):
        parse_tests(spec)


# ---------------------------------------------------------------- scoring


@requires_bubblewrap
def test_correct_wrong_and_partial_programs(reward):
    completions = [
        _fenced(SUM_PROGRAM),
        _fenced("print(3)"),  # right on the first test only
        _fenced("print(int(input().split()[0]) * 2)"),  # wrong on the first test only
        _fenced("a, b = map(int, input().split())\nprint(a - b)"),
        "I don't know.",
    ]
    scores = reward(["prompt"] * 5, completions, tests=[SUM_TESTS] * 5)
    assert scores == [1.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 0.0, 0.0]


@requires_bubblewrap
def test_all_or_nothing(sandbox):
    reward = CodeExecutionReward("all_or_nothing", sandbox=sandbox)
    completions = [_fenced(SUM_PROGRAM), _fenced("print(int(input().split()[0]) * 2)")]
    assert reward(None, completions, tests=[SUM_TESTS, SUM_TESTS]) == [1.0, 0.0]


@requires_bubblewrap
def test_assertion_tests(reward):
    completions = [
        _fenced("def f(x):\n    return x * x"),
        _fenced("def f(x):\n    return 4"),
        _fenced("def f(x):\n    return x * x\nraise SystemExit(1)"),
    ]
    scores = reward(None, completions, tests=[json.dumps(SQUARE_TESTS)] * 3)
    assert scores == [1.0, pytest.approx(1 / 3), 0.0]


@requires_bubblewrap
@pytest.mark.parametrize("exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"])
def test_exiting_before_the_assertions_does_not_pass_them(reward, exit_call):
    assert reward(None, [_fenced(f"def f(x):\n    return 0\n{exit_call}")], tests=[SQUARE_TESTS]) == [0.0]


@requires_bubblewrap
def test_required_code_block(sandbox):
    reward = CodeExecutionReward(sandbox=sandbox, require_code_block=True)
    assert reward(None, [SUM_PROGRAM, _fenced(SUM_PROGRAM)], tests=[SUM_TESTS, SUM_TESTS]) == [0.0, 1.0]


@requires_bubblewrap
def test_max_tests_uses_the_first_tests(sandbox):
    reward = CodeExecutionReward(sandbox=sandbox, max_tests=1)
    assert reward(None, [_fenced("print(3)")], tests=[SUM_TESTS]) == [1.0]


@requires_bubblewrap
def test_unreadable_tests_score_none_and_the_rest_is_scored(reward, caplog):
    with caplog.at_level("WARNING", logger="cohort.rewards.code"):
        scores = reward(None, [_fenced(SUM_PROGRAM)] * 3, tests=["{broken", SUM_TESTS, []])
    assert scores == [None, 1.0, None]
    assert "row 0" in caplog.text and "row 2" in caplog.text


@requires_bubblewrap
def test_protocol_errors(reward):
    with pytest.raises(KeyError, match="tests"):
        reward(None, ["print(1)"], answer=["1"])
    with pytest.raises(ValueError, match="1 rows for 2 completions"):
        reward(None, ["print(1)", "print(2)"], tests=[SUM_TESTS])
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        reward(None, [[{"role": "assistant", "content": "print(1)"}]], tests=[SUM_TESTS])


@requires_bubblewrap
def test_trl_style_call_with_other_columns_and_a_custom_column(sandbox):
    reward = CodeExecutionReward(sandbox=sandbox, tests_column="test_list")
    scores = reward(
        prompts=["p", "p"],
        completions=[_fenced(SUM_PROGRAM)] * 2,
        test_list=[SUM_TESTS, SUM_TESTS],
        completion_ids=[[1, 2], [1, 2]],
        answer=["", ""],
    )
    assert scores == [1.0, 1.0]
    assert reward.__name__ == reward.name == "code_execution"
    assert reward.is_correctness
    assert reward.extract_answer(_fenced(SUM_PROGRAM)) == SUM_PROGRAM
    assert "rlimits" in reward.isolation


@requires_bubblewrap
def test_constructor_validation(sandbox):
    with pytest.raises(ValueError, match="mode"):
        CodeExecutionReward("best_of")
    with pytest.raises(ValueError, match="not both"):
        CodeExecutionReward(sandbox=sandbox, timeout_s=1.0)
    with pytest.raises(ValueError, match="timeout_s"):
        CodeExecutionReward(timeout_s=0)
    with pytest.raises(ValueError, match="max_tests"):
        CodeExecutionReward(sandbox=sandbox, max_tests=0)
    with pytest.raises(ValueError, match="memory_mb"):
        CodeExecutionReward(memory_mb=-5)
    for budget in (0, -1, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="budget_s"):
            CodeExecutionReward(sandbox=sandbox, budget_s=budget)


@requires_bubblewrap
def test_default_construction_builds_its_own_sandbox():
    reward = CodeExecutionReward(timeout_s=2.5, memory_mb=512, workers=3)
    assert reward.sandbox.workers == 3
    assert (reward.sandbox.limits.wall_time_s, reward.sandbox.limits.cpu_time_s, reward.sandbox.limits.memory_mb) == (2.5, 3, 512)
    assert reward.budget_s == 1.5 and reward.worst_case_s(64) == pytest.approx(22 * 1.75)  # ceil(64 / 3) rounds of budget + teardown
    defaults = CodeExecutionReward(workers=2)
    assert defaults.sandbox.limits.wall_time_s == 1.0 and defaults.worst_case_s(64) < 60  # the usual batch fits the scorer's limit
    assert reward(None, [_fenced(SUM_PROGRAM)], tests=[SUM_TESTS]) == [1.0]


# ---------------------------------------------------------------- time: per test, per completion, per batch


@requires_bubblewrap
@pytest.mark.parametrize("form", ["assertions", "stdio"])
def test_a_completion_past_its_budget_scores_zero_not_its_fraction(sandbox, form):
    """Each test takes 1 s of the 3 s a test may take; a 2.5 s budget ends during the third test: 0, not 2/3."""
    if form == "assertions":
        program, tests = "import time\ndef f(x):\n    time.sleep(1.0)\n    return x * x", SQUARE_TESTS
    else:
        program, tests = "import time\ntime.sleep(1.0)\n" + SUM_PROGRAM, SUM_TESTS
    assert CodeExecutionReward(sandbox=sandbox, budget_s=2.5)(None, [_fenced(program)], tests=[tests]) == [0.0]
    assert CodeExecutionReward(sandbox=sandbox, budget_s=20.0)(None, [_fenced(program)], tests=[tests]) == [1.0]


@requires_bubblewrap
def test_a_batch_of_hanging_programs_ends_within_its_bound(sandbox):
    """6 programs that hang in every test and 2 honest ones on 2 workers: at most 4 rounds of one budget each."""
    reward = CodeExecutionReward(sandbox=sandbox)  # the default budget, 1.5 s
    hang = _fenced("import time\ndef f(x):\n    time.sleep(60)")
    completions = [_fenced("def f(x):\n    return x * x")] + [hang] * 6 + [_fenced("def f(x):\n    return x * x  # another")]
    start = time.monotonic()
    scores = reward(None, completions, tests=[SQUARE_TESTS] * 8)
    elapsed = time.monotonic() - start
    assert scores == [1.0] + [0.0] * 6 + [1.0]
    assert reward.worst_case_s(8) == pytest.approx(4 * 1.75)
    assert elapsed < reward.worst_case_s(8) + 5.0, elapsed  # without a budget: 6 x 3 tests x 3 s / 2 workers = 27 s


@requires_bubblewrap
def test_the_judge_is_killed_when_a_test_runs_past_its_limit_inside_c(tmp_root):
    """100,000 ints with one hash make the test's set() run for minutes in C, where SIGALRM cannot reach; the host kills
    the judge at the 1 s limit plus its margin, that test fails, and the other two still run on a fresh pair."""
    limits = SandboxLimits(wall_time_s=1.0, cpu_time_s=60, memory_mb=512, max_processes=16)  # the CPU limit would come far later
    reward = CodeExecutionReward(sandbox=Sandbox(limits, workers=2, tmp_root=tmp_root), budget_s=60.0)
    program = "def f(x):\n    return [k * (2**61 - 1) for k in range(1, 100_001)] if x == 3 else [x]"
    tests = ["assert sorted(set(f(2))) == [2]", "assert sorted(set(f(3))) == [3]", "assert sorted(set(f(4))) == [4]"]
    start = time.monotonic()
    assert reward(None, [_fenced(program)], tests=[tests]) == [pytest.approx(2 / 3)]
    assert time.monotonic() - start < 20.0  # the set alone would take minutes


@requires_bubblewrap
def test_a_batch_too_big_for_the_scorers_limit_loses_no_sample(sandbox, caplog):
    """4 hanging programs between 2 honest ones, budget 2 s, 2 workers: 6.75 s at worst, over a 4 s scorer limit.
    score_within stops the batch call in time; the scorer retries the rest one by one, each alone within its
    share of a second 4 s (a hang then scores 0, like one past its budget), and the scores already made are kept."""
    reward = CodeExecutionReward(sandbox=sandbox, budget_s=2.0)
    honest, hang = _fenced("def f(x):\n    return x * x"), _fenced("import time\ndef f(x):\n    time.sleep(60)")
    completions = [honest] + [hang.replace("60", str(60 + i)) for i in range(4)] + [honest + "\n# again"]
    scorer = RewardScorer([NamedReward("code", reward)], timeout_s=4.0)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="cohort.rewards.base"):
        scores = scorer.score([None] * 6, completions, {"tests": [SQUARE_TESTS] * 6})
    assert "could not be scored before the call's deadline" in caplog.text  # the batch call was cut: the retry path ran
    assert scores.per_function["code"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert time.monotonic() - start < 2 * 4.0 + 2.0  # the scorer's two passes, and teardown


@requires_bubblewrap
def test_alone_in_a_call_a_completion_gets_what_is_left_of_it(sandbox):
    reward = CodeExecutionReward(sandbox=sandbox, budget_s=30.0)
    hang = _fenced("import time\ndef f(x):\n    time.sleep(60)")
    start = time.monotonic()
    assert reward.score_within(1.5, None, [hang], tests=[SQUARE_TESTS]) == [0.0]
    assert time.monotonic() - start < 1.5 + 1.0
    assert reward.score_within(0.1, None, [_fenced("def f(x):\n    return x * x")], tests=[SQUARE_TESTS]) == [None]  # no time to run


def test_a_sandbox_that_cannot_start_scores_none_and_the_call_returns(tmp_path):
    """Infrastructure is None (the throwaway root vanished), a completion without a program still 0: no exception."""
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    reward = CodeExecutionReward(sandbox=Sandbox(SandboxLimits(wall_time_s=2.0), workers=2, isolation="none", tmp_root=root))
    root.rmdir()
    scores = reward(None, [_fenced("def f(x):\n    return x * x"), _fenced(SUM_PROGRAM), "  "], tests=[SQUARE_TESTS, SUM_TESTS, SUM_TESTS])
    assert scores == [None, None, 0.0]


# ---------------------------------------------------------------- hostile programs


@requires_bubblewrap
def test_one_crashing_or_hanging_test_cannot_hide_the_others(sandbox):
    crash = "import os\ndef f(x):\n    if x == 3:\n        os._exit(0)\n    return x * x"
    hang = "import time\ndef f(x):\n    if x == 3:\n        time.sleep(60)\n    return x * x"
    kill = "import os, signal\ndef f(x):\n    if x == 3:\n        os.kill(os.getpid(), signal.SIGKILL)\n    return x * x"
    reward = CodeExecutionReward(sandbox=sandbox, budget_s=30)  # room for the hang (3 s) and a fresh pair
    scores = reward(None, [_fenced(crash), _fenced(hang), _fenced(kill)], tests=[SQUARE_TESTS] * 3)
    assert scores == [pytest.approx(2 / 3)] * 3  # test 2 fails; tests 1 and 3 still ran and passed


def _named(name: str) -> list[str]:
    """Pids of processes whose name (/proc/PID/comm) is ``name``."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and open(f"/proc/{entry.name}/comm").read().strip() == name:
                found.append(entry.name)
        except OSError:
            pass
    return found


@requires_bubblewrap
def test_no_sandbox_process_outlives_the_scoring(reward):
    """The hanging program names its process (prctl) so that other tests' sandboxes running meanwhile do not count."""
    marker = f"hang{uuid.uuid4().hex[:11]}"
    hang = f"import ctypes, time\nctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)\ndef f(x):\n    time.sleep(60)"
    seen: list[str] = []

    def watch() -> None:  # while the reward runs: is the program there at all?
        deadline = time.monotonic() + 10.0
        while not seen and time.monotonic() < deadline:
            seen.extend(_named(marker))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert reward(None, [_fenced(hang)], tests=[SQUARE_TESTS[:1]]) == [0.0]
    watcher.join()
    assert seen, "the hanging program was never seen running: this test would prove nothing"
    deadline = time.monotonic() + 5.0  # the kernel may take a moment to reap a killed namespace
    while _named(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _named(marker) == []


@requires_bubblewrap
def test_exceptions_and_values_of_the_program_reach_the_tests(reward):
    program = "import math\ndef root(x):\n    if x < 0:\n        raise ValueError(f'{x} < 0')\n    return math.sqrt(x)"
    tests = [
        "try:\n    root(-4)\nexcept ValueError as error:\n    assert str(error) == '-4 < 0'\nelse:\n    raise AssertionError",
        "assert math.isclose(root(2), 1.4142135623730951)",  # math: the judge's own, since the program imported it
        "assert isinstance(root(4), float) and root(0.25) == 0.5",
    ]
    assert reward(None, [_fenced(program)], tests=[tests]) == [1.0]


@requires_bubblewrap
def test_only_the_entry_point_comes_from_the_program(reward):
    """Constants and other functions of the program are not the test's (the entry point: f, used by both asserts)."""
    program = "LIMIT = 10\ndef f(x):\n    return x * x\ndef g(x):\n    return x"
    tests = [["assert f(2) == 4", "assert f(3) == 9"], ["assert f(2) == 4", "assert f(3) == 9 and LIMIT == 10"], ["assert f(2) == 4 and g(1) == 1", "assert f(1) == 1"]]
    assert reward(None, [_fenced(program)] * 3, tests=tests) == [1.0, 0.5, 0.5]


@requires_bubblewrap
def test_assertion_tests_under_another_interpreter(tmp_root):
    """The harness then travels as source (not precompiled), and bwrap may run as uid 65534."""
    if not os.access("/usr/bin/python3", os.X_OK) or os.path.realpath("/usr/bin/python3") == os.path.realpath(sys.executable):
        pytest.skip("no other interpreter at /usr/bin/python3")
    sandbox = Sandbox(SandboxLimits(wall_time_s=3.0, cpu_time_s=2), workers=2, python="/usr/bin/python3", tmp_root=tmp_root)
    honest, forged = "def f(x):\n    return x * x", "class A:\n    def __eq__(s, o): return True\ndef f(x):\n    return A()"
    assert CodeExecutionReward(sandbox=sandbox)(None, [_fenced(honest), _fenced(forged)], tests=[SQUARE_TESTS] * 2) == [1.0, 0.0]


def test_isolation_option_and_refusal_at_construction(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(IsolationUnavailable, match="bubblewrap is not installed.*sudo apt-get install bubblewrap"):
        CodeExecutionReward()  # refused when the reward is built, before any model is loaded
    with pytest.raises(IsolationUnavailable, match="bubblewrap is not installed"):
        build_reward({"name": "code", "timeout_s": 2})
    weak = build_reward({"name": "code", "isolation": "none"}).fn  # named explicitly: runs
    assert weak.sandbox.isolation_kind == "none" and "NO isolation" in weak.isolation
    assert weak(None, ["def f(x):\n    return x * x"], tests=[SQUARE_TESTS]) == [1.0]
    with pytest.raises(ValueError, match="isolation"):
        CodeExecutionReward(isolation="docker")
    with pytest.raises(ValueError, match="not both"):
        CodeExecutionReward(sandbox=weak.sandbox, isolation="none")


@pytest.fixture(scope="module")
def hostile_run(sandbox, tmp_root):
    """Run every attack in one batch beside a correct program; return (scores, host facts)."""
    if not sandbox.isolation_adequate:
        pytest.skip(f"no adequate isolation here ({sandbox.isolation}); hostile programs are not run")
    workspace = Path(tempfile.mkdtemp(prefix="cohort-hostile-"))
    canary = workspace / "canary.txt"
    canary.write_text("precious")
    home = workspace / "home"
    home.mkdir(mode=0o700)
    home_secret = f"home-{uuid.uuid4().hex}"
    (home / "secret.txt").write_text(home_secret)
    os.chmod(home / "secret.txt", 0o600)
    env_secret = f"env-{uuid.uuid4().hex}"
    escape = f"cohort-escape-{uuid.uuid4().hex}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    # name -> (program, tests). Where a test expects the attack's success message, a score of 0
    # also proves the attack failed; for the others the host checks below carry the proof.
    attacks = {
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", ONE_TEST),
        "infinite_loop": ("while True:\n    pass", ONE_TEST),
        "memory_bomb": ("hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))", ONE_TEST),
        "delete_outside": (
            f"import os, shutil\nos.remove({str(canary)!r})\nshutil.rmtree({str(workspace)!r})\nprint('deleted')",
            [{"input": "", "output": "deleted"}],
        ),
        "overwrite_outside": (
            _dedent(
                f"""
                import os, sys
                written = 0
                for path in [{str(canary)!r}, "/usr/{escape}", "/{escape}", os.path.join(sys.prefix, "{escape}")]:
                    try:
                        open(path, "w").write("pwned")
                        written += 1
                    except OSError:
                        pass
                if written:
                    print("overwritten")
                """
            ),
            [{"input": "", "output": "overwritten"}],
        ),
        "network": (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\nprint('connected')",
            [{"input": "", "output": "connected"}],
        ),
        "read_environment": (
            _dedent(
                """
                import glob, os
                found = [os.environ.get("COHORT_TEST_SECRET", "")]
                for path in glob.glob("/proc/*/environ"):
                    try:
                        found += [e.split(b"=", 1)[1].decode() for e in open(path, "rb").read().split(b"\\0") if e.startswith(b"COHORT_TEST_SECRET=")]
                    except OSError:
                        pass
                print(max(found, key=len))
                """
            ),
            [{"input": "", "output": env_secret}],
        ),
        "read_home": (
            f"import os\nfor p in ['~/secret.txt', {str(home / 'secret.txt')!r}]:\n    try:\n        print(open(os.path.expanduser(p)).read())\n    except OSError:\n        pass",
            [{"input": "", "output": home_secret}],
        ),
        "output_flood": ("import sys\nwhile True:\n    try:\n        sys.stdout.write('3\\n' * 100000)\n    except OSError:\n        pass", ONE_TEST),
        "kill_parent": (
            _dedent(
                """
                import os, signal
                for target in (os.getppid(), -1, 0):  # the parent, everything it may signal, its group
                    try:
                        os.kill(target, signal.SIGKILL)
                    except OSError:
                        pass
                print("survived")
                """
            ),
            ONE_TEST,
        ),
        "sleep_past_limit": ("import time\ntime.sleep(60)\nprint(3)", ONE_TEST),
        "exit_before_asserts": ("def f(x):\n    return 0\nimport os\nos._exit(0)", SQUARE_TESTS),
    }
    names = list(attacks) + ["correct_after_attacks"]
    completions = [_fenced(program) for program, _ in attacks.values()] + [_fenced(SUM_PROGRAM)]
    tests = [spec for _, spec in attacks.values()] + [SUM_TESTS]
    peak_rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COHORT_TEST_SECRET", env_secret)
        patch.setenv("HOME", str(home))
        try:
            scores = CodeExecutionReward(sandbox=sandbox)(["prompt"] * len(names), completions, tests=tests)
            try:
                listener.accept()
                connection_received = True
            except BlockingIOError:
                connection_received = False
            facts = {
                "canary": canary.read_text() if canary.exists() else None,
                "home_secret_intact": (home / "secret.txt").read_text() == home_secret,
                "connection_received": connection_received,
                "escaped_files": [p for p in (f"/usr/{escape}", f"/{escape}", os.path.join(sys.prefix, escape)) if os.path.exists(p)],
                "peak_rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_rss_before) / 1024,
                "leftovers": list(tmp_root.iterdir()),
            }
        finally:
            listener.close()
            shutil.rmtree(workspace, ignore_errors=True)
    return dict(zip(names, scores)), facts


@requires_bubblewrap
@pytest.mark.parametrize(
    "attack",
    [
        "fork_bomb",
        "infinite_loop",
        "memory_bomb",
        "delete_outside",
        "overwrite_outside",
        "network",
        "read_environment",
        "read_home",
        "output_flood",
        "kill_parent",
        "sleep_past_limit",
        "exit_before_asserts",
    ],
)
def test_hostile_program_scores_zero(hostile_run, attack):
    scores, _ = hostile_run
    assert scores[attack] == 0.0


@requires_bubblewrap
def test_the_run_continues_after_the_attacks(hostile_run):
    scores, facts = hostile_run
    assert scores["correct_after_attacks"] == 1.0
    assert facts["leftovers"] == [], "throwaway directories left behind after timeouts and kills"


@requires_bubblewrap
def test_files_outside_the_sandbox_are_unharmed(hostile_run):
    _, facts = hostile_run
    assert facts["canary"] == "precious"
    assert facts["home_secret_intact"]
    assert facts["escaped_files"] == []


@requires_bubblewrap
def test_no_connection_reached_the_host(hostile_run):
    _, facts = hostile_run
    assert not facts["connection_received"]


@requires_bubblewrap
def test_output_flood_does_not_grow_host_memory(hostile_run):
    _, facts = hostile_run
    assert facts["peak_rss_growth_mib"] < 64, facts["peak_rss_growth_mib"]
