"""The math reward: answer extraction and its order, math-verify equivalence, canonical forms for voting,
unscorable references, scoring through RewardScorer, and the hard deadline of its worker processes."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

from cohort.rewards import (
    NamedReward,
    RewardScorer,
    build_reward,
    correctness_reward,
)
from cohort.rewards.math import (
    MathAnswerReward,
    answer_after_phrase,
    answer_tag_content,
    answer_verdict,
    clean_answer,
    extract_final_answer,
    gsm8k_marker_answer,
    last_boxed_content,
    last_number,
    reference_answer_text,
)

PATHOLOGICAL = r"The answer is \boxed{9^{9^{9}}}"  # sympy tries to evaluate 9^387420489 when comparing it


def score(reward: MathAnswerReward, reference, *completions: str) -> list[float | None]:
    return reward(prompts=[""] * len(completions), completions=list(completions), answer=[reference] * len(completions))


# --- extraction strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"first \boxed{1}, finally \boxed{\frac{\sqrt{3}}{3}}.", r"\frac{\sqrt{3}}{3}"),
        (r"\boxed{ \{1, 2\} }", r"\{1, 2\}"),
        (r"\fbox{12}", "12"),
        (r"so \boxed 5 is it", "5"),
        (r"\boxed{\frac{1}{2}", None),  # never closed
        ("no box here", None),
    ],
)
def test_last_boxed_content(text, expected):
    assert last_boxed_content(text) == expected


def test_answer_tag_takes_the_last_block_and_looks_inside_it():
    assert answer_tag_content("<answer>1</answer> wait <answer> 7 </answer>") == "7"
    assert answer_tag_content(r"<answer>so \boxed{8} done</answer>") == "8"
    assert answer_tag_content("<ANSWER>The answer is 9.</ANSWER>") == "9"
    assert answer_tag_content("<answer>unclosed") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42. I am sure.", "42"),
        ("The final answer is 3.5.", "3.5"),
        ("Answer: x = 3\nmore text", "x = 3"),
        ("the answer is 4, then the answer is 5", "5"),
        ("no phrase", None),
    ],
)
def test_answer_after_phrase(text, expected):
    assert answer_after_phrase(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 apples and 1,250 pears.", "1,250"),
        ("it dropped to -3 degrees", "-3"),
        ("pages 3-4", "4"),
        ("x is 3/4", "3/4"),
        ("cost $5.50.", "5.50"),
        ("a 50% rise", "50%"),
        ("v2 only", None),
        ("none", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_gsm8k_marker():
    assert gsm8k_marker_answer("work\n#### 1,250\n") == "1,250"
    assert gsm8k_marker_answer("no marker") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**$18.00**", "18.00"),
        ("72 dollars.", "72"),
        ("50% of them", "50%"),
        (r"\(\frac{1}{2}\)", r"\frac{1}{2}"),
        (r"$\boxed{4}$", "4"),
        ("2 pi", "2 pi"),  # a value, not a number with a unit
        ("3 x", "3 x"),
        (r"\$1,000", "1,000"),
    ],
)
def test_clean_answer(text, expected):
    assert clean_answer(text) == expected


def test_strategies_are_tried_in_order():
    text = r"The answer is 5. Double-checking: \boxed{6}. Then 7."
    assert extract_final_answer(text) == "6"  # default order: boxed first
    assert extract_final_answer(text, ("the_answer_is", "boxed")) == "5"
    assert extract_final_answer(text, ("last_number",)) == "7"
    assert extract_final_answer("The answer is 5.", ("boxed", "the_answer_is")) == "5"  # boxed finds nothing
    assert extract_final_answer("no answer at all", ("boxed", "answer_tag", "the_answer_is")) is None


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (72, "72"),
        (0.5, "0.5"),
        (r"worked \boxed{\frac{1}{2}} out", r"\frac{1}{2}"),
        ("work\n#### 1,000", "1,000"),
        ("  7 ", "7"),
        (None, None),
        ("", None),
        (True, None),
    ],
)
def test_reference_answer_text(reference, expected):
    assert reference_answer_text(reference) == expected


# --- equivalence ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "completion", "expected"),
    [
        ("72", "So she has #### 72 ... the answer is 72.", 1.0),
        (72, "The answer is 72 dollars.", 1.0),
        ("72", "The answer is 73.", 0.0),
        ("0.5", r"\boxed{\frac{1}{2}}", 1.0),
        ("1/2", "The answer is 0.5", 1.0),
        (r"\frac{1}{2}", r"\boxed{\dfrac12}", 1.0),
        (r"\frac{1}{2}", r"\boxed{0.51}", 0.0),
        ("1000", r"The answer is \$1,000.", 1.0),
        ("1000", "It costs $1,000.00", 1.0),
        ("1,000", "1000", 1.0),
        ("50", r"\boxed{50\%}", 1.0),
        ("50", "so 50% of them", 1.0),
        ("10", r"\boxed{10\text{ cm}}", 1.0),
        ("-3", "The temperature fell to -3", 1.0),
        ("-3", "The answer is 3", 0.0),
        ("3.50", r"\boxed{3.5}", 1.0),
        (r"7/2", r"\boxed{3\frac{1}{2}}", 1.0),
        (r"\frac{\sqrt{2}}{2}", r"\boxed{\sqrt{2}/2}", 1.0),
        (r"5\sqrt{2}", r"\boxed{\sqrt{50}}", 1.0),
        (r"25\pi", r"\boxed{25 \pi}", 1.0),
        ("x^2 + 6x + 9", r"\boxed{(x+3)^2}", 1.0),
        ("x^2 + 6x + 9", r"\boxed{(x-3)^2}", 0.0),
        ("(-1, 4)", r"\boxed{(-1,4)}", 1.0),
        ("0, 2", r"\boxed{\{2, 0\}}", 1.0),
        ("3", r"<answer>x = 3</answer>", 1.0),
        ("9", "no answer in here", 0.0),
    ],
)
def test_equivalence(reference, completion, expected):
    assert score(MathAnswerReward(), reference, completion) == [expected]


def test_float_rounding_sets_the_numeric_tolerance():
    assert score(MathAnswerReward(float_rounding=6), "1/3", r"\boxed{0.3333}") == [0.0]
    assert score(MathAnswerReward(float_rounding=3), "1/3", r"\boxed{0.3333}") == [1.0]


@pytest.mark.parametrize("reference", ["???", "", None, "   "])
def test_unreadable_reference_cannot_be_scored(reference):
    assert score(MathAnswerReward(), reference, r"\boxed{1}", "2") == [None, None]


def test_missing_answer_column_and_option_errors():
    reward = MathAnswerReward(answer_column="target")
    with pytest.raises(KeyError, match="math needs the dataset column 'target'"):
        reward(prompts=[""], completions=["1"], answer=["1"])
    with pytest.raises(ValueError, match="extract must be a non-empty list of distinct strategies from boxed"):
        MathAnswerReward(extract=("boxed", "guess"))
    with pytest.raises(ValueError, match="extract"):
        MathAnswerReward(extract=())
    with pytest.raises(ValueError, match="timeout_s must be"):
        MathAnswerReward(timeout_s=0)
    with pytest.raises(ValueError, match="float_rounding must be"):
        MathAnswerReward(float_rounding=-1)
    assert MathAnswerReward(extract="last_number").extract == ("last_number",)


# --- canonical answers for majority voting -----------------------------------------------------------


def test_equal_answers_in_different_notations_vote_together():
    reward = MathAnswerReward()
    halves = [r"\boxed{\frac{1}{2}}", "The answer is 0.5.", "<answer>1/2</answer>", r"\boxed{\dfrac12}", "so 0.50"]
    assert {reward.extract_answer(c) for c in halves} == {"1/2"}
    assert {reward.extract_answer(c) for c in ["#### 1,000", r"\boxed{1000}", "The answer is $1000.00."]} == {"1000"}
    assert {reward.extract_answer(c) for c in [r"\boxed{(x+1)^2}", r"\boxed{x^2+2x+1}"]} == {"x**2 + 2*x + 1"}
    assert reward.extract_answer(r"\boxed{50\%}") == reward.extract_answer("50") == "50"
    assert reward.extract_answer("x = 3") == "3"
    assert reward.extract_answer(r"\boxed{\frac{1}{3}}") != reward.extract_answer(r"\boxed{\frac{1}{4}}")
    assert reward.extract_answer("no answer here") is None


# --- through the scorer and the registry -----------------------------------------------------------------


def test_batch_through_reward_scorer_built_by_name():
    reward = build_reward({"name": "cohort.rewards.math:MathAnswerReward", "extract": ["boxed", "last_number"], "weight": 2.0})
    assert reward.name == "MathAnswerReward" and correctness_reward([reward]) is reward
    completions = [r"\boxed{\frac{3}{4}}", "0.75", "0.7", r"\boxed{5}", "5.0", "nothing"]
    answers = ["3/4", "3/4", "3/4", "5", "5", "???"]
    scores = RewardScorer([reward]).score([""] * 6, completions, {"answer": answers, "completion_ids": [[1]] * 6})
    assert scores.per_function["MathAnswerReward"].tolist()[:5] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert math.isnan(scores.per_function["MathAnswerReward"][5]) and math.isnan(scores.total[5])
    assert scores.total.tolist()[:5] == [2.0, 2.0, 0.0, 2.0, 2.0]
    assert scores.failures == {"MathAnswerReward": 0}


def test_scores_from_a_worker_thread():
    """Off the main thread there are no signals: math-verify's own timeouts are off, so it still works."""
    results = {}
    worker = threading.Thread(target=lambda: results.update(value=score(MathAnswerReward(), "1/2", "0.5", "3")))
    worker.start()
    worker.join(30)
    assert results["value"] == [1.0, 0.0]


# --- the hard deadline ----------------------------------------------------------------------------------

# Comparing 9^(9^9) with 1000 makes sympy compute 9**387420489: minutes of big-integer squarings, the
# last of them single C calls that no signal handler can interrupt. Only killing the worker ends it.
MARGIN_S = 3.0  # the kill and replacement of a worker take ~0.1 s here; the rest is slack for a loaded machine


def test_a_pathological_answer_costs_its_time_limit_scores_zero_and_its_neighbours_are_scored():
    """Twice in a row: the first call starts the workers (cold), the second finds them (warm)."""
    reward = MathAnswerReward(timeout_s=1.0, workers=3)  # a pool of its own, so that the first call is cold
    for run in ("cold", "warm"):
        started = time.monotonic()
        assert score(reward, "1000", r"\boxed{1000}", PATHOLOGICAL, "1000", "999") == [1.0, 0.0, 1.0, 0.0], run
        assert time.monotonic() - started < 1.0 + MARGIN_S + (3.0 if run == "cold" else 0.0), run


def test_the_check_itself_would_run_for_minutes():
    """What the deadline is for: unkilled, checking the answer is still running after 3 s (in a worker
    of this test's own, so that the 3 s limit is the only thing that stops it)."""
    from cohort.rewards.workers import WorkerPool

    pool = WorkerPool(1, preload=("cohort.rewards.math",))
    try:
        (outcome,) = pool.run(answer_verdict, [("1000", "9^{9^{9}}", 6)], 3.0)
        assert outcome.timed_out
    finally:
        pool.close()


def test_through_the_scorer_a_pathological_answer_is_a_zero_not_a_failure():
    scorer = RewardScorer([NamedReward("math", MathAnswerReward(timeout_s=0.5))], timeout_s=60)
    started = time.monotonic()
    scores = scorer.score([""] * 3, [r"\boxed{1000}", PATHOLOGICAL, "1000"], {"answer": ["1000"] * 3})
    assert time.monotonic() - started < 0.5 + MARGIN_S
    assert scores.per_function["math"].tolist() == [1.0, 0.0, 1.0] and scores.failures == {"math": 0}


def test_the_scorer_deadline_ends_the_wait_for_the_workers():
    """With a per-answer limit longer than the scorer's, the scorer's deadline (a SIGALRM, which can
    interrupt the wait for the workers: that is Python code) ends the call; the busy worker is
    killed, and the retry costs only the pathological sample."""
    scorer = RewardScorer([NamedReward("math", MathAnswerReward(timeout_s=60))], timeout_s=3.0)
    started = time.monotonic()
    scores = scorer.score([""] * 3, [r"\boxed{1000}", PATHOLOGICAL, "1000"], {"answer": ["1000"] * 3})
    assert time.monotonic() - started < 2 * 3.0 + MARGIN_S
    values = scores.per_function["math"].tolist()
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 1.0
    assert scores.failures == {"math": 1}


def test_the_scorer_time_limit_still_works_after_math_rewards_ran():
    def hangs(prompts, completions, **_):
        while True:
            pass

    math_first = [NamedReward("math", MathAnswerReward(timeout_s=0.3)), NamedReward("hangs", hangs, 0.0)]
    start = time.monotonic()
    scores = RewardScorer(math_first, timeout_s=0.5).score([""] * 2, [PATHOLOGICAL, "7"], {"answer": ["7", "7"]})
    assert time.monotonic() - start < 10
    assert scores.per_function["math"].tolist() == [0.0, 1.0]
    assert all(math.isnan(v) for v in scores.per_function["hangs"].tolist())
    assert scores.failures == {"math": 0, "hangs": 2}


def test_checks_run_in_worker_processes_forked_from_the_fork_server_not_from_the_trainer():
    from cohort.rewards.workers import shared_pool

    pool = shared_pool("math", 2, preload=("cohort.rewards.math",))
    (outcome,) = pool.run(os.getppid, [()], 10.0)
    assert outcome.value not in (None, os.getpid())  # the worker's parent is the fork server
