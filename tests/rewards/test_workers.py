"""Hard deadlines: killable worker processes (cohort.rewards.workers) and any reward behind one
(``hard_deadline: true``), against calls that no signal can interrupt (one long C call, a crash)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from cohort.rewards import RewardScorer, RewardTimeout, build_reward, call_with_time_limit, correctness_reward
from cohort.rewards.workers import WorkerPool
from rewards.c_calls import FOREVER, c_call

MARGIN_S = 3.0  # a kill and a replacement take ~0.1 s here; the rest is slack for a loaded machine


def test_a_soft_deadline_waits_for_a_c_call_to_return():
    """The control: the scorer's own deadline (a SIGALRM at 0.05 s) fires only once the C call
    (4 million PBKDF2 rounds, ~2 s here) is over."""
    started = time.monotonic()
    with pytest.raises(RewardTimeout):
        call_with_time_limit(lambda: c_call(4_000_000), 0.05)
    assert time.monotonic() - started > 0.25


def test_a_worker_is_killed_at_its_deadline_and_replaced():
    pool = WorkerPool(1, preload=("rewards.c_calls",))
    try:
        (before,) = pool.run(os.getpid, [()], 10.0)
        started = time.monotonic()
        stalled, quick = pool.run(c_call, [(FOREVER,), (10,)], 0.5)
        assert stalled.timed_out and not quick.timed_out and quick.error is None  # quick ran after the kill
        assert time.monotonic() - started < 0.5 + MARGIN_S
        (after,) = pool.run(os.getpid, [()], 10.0)
        assert after.value != before.value  # a new process
        (raised,) = pool.run(int, [("x",)], 10.0)
        assert raised.error == "ValueError: invalid literal for int() with base 10: 'x'"

        def in_the_main_script():
            return 1

        in_the_main_script.__module__ = "__main__"
        with pytest.raises(ValueError, match="in_the_main_script is defined in the main script"):
            pool.run(in_the_main_script, [()], 10.0)
    finally:
        pool.close()


def test_hard_deadline_ends_a_c_call_on_time_and_the_neighbours_are_scored():
    """Twice in a row: the batch call is killed at the scorer's deadline (1 s), then the retry pass
    gives each sample its share of another second; only the stalling sample is lost."""
    reward = build_reward({"name": "rewards.c_calls:stalls_on_stall", "hard_deadline": True}, timeout_s=1.0)
    scorer = RewardScorer([reward], timeout_s=1.0)
    for run in range(2):
        started = time.monotonic()
        scores = scorer.score([""] * 3, ["a", "stall", "b"])
        assert time.monotonic() - started < 2 * 1.0 + MARGIN_S, run
        values = scores.total.tolist()
        assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 1.0 and scores.failures == {"stalls_on_stall": 1}


def test_hard_deadline_survives_a_crash_in_c_code():
    reward = build_reward({"name": "rewards.c_calls:crashes_on_crash", "hard_deadline": True}, timeout_s=10.0)
    scores = RewardScorer([reward], timeout_s=10.0).score([""] * 3, ["a", "crash", "b"])
    values = scores.total.tolist()
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 1.0 and scores.failures == {"crashes_on_crash": 1}


def test_hard_deadline_runs_the_reward_in_another_process_and_keeps_what_it_offers():
    pid = build_reward({"name": "rewards.c_calls:own_pid", "hard_deadline": True})
    assert pid.name == "own_pid" and pid.fn(prompts=[""], completions=["x"])[0] != os.getpid()
    exact = build_reward({"name": "exact_match", "alias": "exact", "weight": 2.0, "hard_deadline": True})
    assert (exact.name, exact.weight) == ("exact", 2.0) and correctness_reward([pid, exact]) is exact
    assert exact.fn(prompts=["", ""], completions=[" 4 ", "5"], answer=["4", "4"]) == [1.0, 0.0]
    assert exact.fn.extract_answer(" 4 ") == "4" and not hasattr(pid.fn, "extract_answer")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "format", "regex": "x", "hard_deadline": True},
         r"reward 'format' could not be built in its worker process: ValueError: reward 'format' does not take options"),
        ({"name": "format", "hard_deadline": "yes"}, "hard_deadline must be true or false"),
    ],
)
def test_hard_deadline_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_reward(spec)


UNGUARDED = """\
print("the script ran")  # at the top, with no `if __name__ == "__main__":` guard
from cohort.rewards.math import MathAnswerReward
print(MathAnswerReward(workers=2)(prompts=["", ""], completions=["7", "8"], answer=["7", "7"]))
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_workers_never_re_run_the_main_script(how, tmp_path):
    """multiprocessing re-runs the main script in every spawn/forkserver child; ours must not (an
    unguarded training script would train again in every worker; a script read from stdin has no
    file to re-run). Real processes: the script runs once, and scores."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    command = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    done = subprocess.run(command, input=None if how == "file" else UNGUARDED, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.stdout.splitlines() == ["the script ran", "[1.0, 0.0]"], done.stderr
    assert "Traceback" not in done.stderr
