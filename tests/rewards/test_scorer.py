"""The reward scorer: weights, None, failures isolated per sample, time limits, strict mode."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

import pytest
import torch

from cohort.rewards import (
    ExactMatch,
    FormatReward,
    NamedReward,
    RewardFunctionError,
    RewardScorer,
    RewardTimeout,
    SoftOverlongPunishment,
    build_reward,
    call_with_time_limit,
    correctness_reward,
)

PROMPTS = ["1+1=", "2+2=", "3+3="]
COMPLETIONS = [" 2 ", "5", "6"]
COLUMNS = {"answer": ["2", "4", "6"]}


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def test_weighted_total_and_per_function_scores():
    scorer = RewardScorer([NamedReward("exact", ExactMatch(), 2.0), NamedReward("length", length_reward, 0.5)])
    scores = scorer.score(PROMPTS, COMPLETIONS, COLUMNS)
    assert scores.per_function["exact"].tolist() == [1.0, 0.0, 1.0]
    assert scores.per_function["length"].tolist() == [3.0, 1.0, 1.0]
    assert scores.total.tolist() == [3.5, 0.5, 2.5]
    assert scores.failures == {"exact": 0, "length": 0}


def test_none_means_could_not_score_and_voids_the_total():
    def picky(prompts, completions, **_):
        return [None if c == "5" else 1.0 for c in completions]

    scores = RewardScorer([NamedReward("picky", picky), NamedReward("free", length_reward, 0.0)]).score(
        PROMPTS, COMPLETIONS, COLUMNS
    )
    assert math.isnan(scores.total[1]) and scores.total[0] == 1.0
    assert scores.failures["picky"] == 0  # None is a legitimate answer, not a failure


def test_a_raising_function_costs_only_the_samples_it_fails_on(caplog):
    def fragile(prompts, completions, **_):
        if any(c == "5" for c in completions):
            raise RuntimeError("cannot parse 5")
        return [1.0] * len(completions)

    scores = RewardScorer([NamedReward("fragile", fragile)]).score(PROMPTS, COMPLETIONS, COLUMNS)
    assert scores.total[0] == 1.0 and scores.total[2] == 1.0 and math.isnan(scores.total[1])
    assert scores.failures["fragile"] == 1
    assert "cannot parse 5" in caplog.text


def test_strict_mode_raises_naming_the_function():
    def broken(prompts, completions, **_):
        raise ValueError("boom")

    with pytest.raises(RewardFunctionError, match="reward function 'broken' failed: boom"):
        RewardScorer([NamedReward("broken", broken)], strict=True).score(PROMPTS, COMPLETIONS, COLUMNS)


def test_an_infinite_loop_is_interrupted_at_the_time_limit():
    def hangs_on_five(prompts, completions, **_):
        while "5" in completions:
            pass
        return [1.0] * len(completions)

    started = time.monotonic()
    scores = RewardScorer([NamedReward("hangs", hangs_on_five)], timeout_s=1.0).score(PROMPTS, COMPLETIONS, COLUMNS)
    assert time.monotonic() - started < 5
    assert scores.total.tolist()[0] == 1.0 and math.isnan(scores.total[1]) and scores.total[2] == 1.0
    assert scores.failures["hangs"] == 1


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cohort.rewards.base" and r.levelno == logging.WARNING]


def test_a_function_hanging_on_everything_costs_at_most_twice_its_time_limit(caplog):
    """The batch call (0.2 s), then a retry pass with a budget of another 0.2 s shared among the nine
    samples: every sample is tried, each for its share, and the whole function costs ~0.4 s."""
    calls = []

    def sleeper(prompts, completions, **_):
        calls.append(len(completions))
        time.sleep(10)

    started = time.monotonic()
    scores = RewardScorer([NamedReward("sleeper", sleeper)], timeout_s=0.2).score(PROMPTS * 3, COMPLETIONS * 3, {"answer": COLUMNS["answer"] * 3})
    assert time.monotonic() - started < 0.4 + 2.0
    assert torch.isnan(scores.total).all() and scores.failures == {"sleeper": 9}
    assert calls == [9] + [1] * 9
    (message,) = _warnings(caplog)  # one line, not one per sample
    assert message.startswith(
        "reward 'sleeper': 9 of 9 samples score None; the batch call failed (exceeded its time limit of 0.2 s), then one "
        "by one: 9 timed out, 0 raised, 0 not tried (retry budget spent); first: sample 0: exceeded its time limit of 0.02"
    )  # its share: 0.2 s / 9


def test_two_hanging_samples_in_a_row_do_not_poison_the_samples_after_them():
    def hangs_on_hang(prompts, completions, **_):
        while "hang" in completions:
            pass
        return [1.0] * len(completions)

    completions = ["a", "hang", "hang", "b", "c", "d"]
    started = time.monotonic()
    scores = RewardScorer([NamedReward("hangs", hangs_on_hang)], timeout_s=1.0).score([""] * 6, completions)
    assert time.monotonic() - started < 2 * 1.0 + 2.0
    values = scores.total.tolist()
    assert values[0] == 1.0 and values[3:] == [1.0, 1.0, 1.0] and math.isnan(values[1]) and math.isnan(values[2])
    assert scores.failures == {"hangs": 2}


def test_one_score_for_many_completions_is_the_functions_error_and_never_broadcast(caplog):
    calls = []

    def one_score(prompts, completions, **_):
        calls.append(len(completions))
        return [1.0]

    scores = RewardScorer([NamedReward("one", one_score)]).score([""] * 64, ["x"] * 64)
    assert calls == [64]  # not retried sample by sample, where one score per call would look right
    assert torch.isnan(scores.total).all() and scores.failures == {"one": 64}
    assert _warnings(caplog) == [
        "reward 'one' returned 1 scores for 64 completions: all 64 samples score None "
        "(an error of the function; not retried sample by sample)"
    ]


def test_a_call_that_no_signal_interrupts_spends_the_retry_budget_and_the_rest_is_named(caplog):
    """Sample 0 holds one C call (PBKDF2, ~2 s here) far past the 0.3 s budget: the SIGALRM can only
    fire after it returns. The samples after it are not tried; they score None, counted and named."""
    calls = []

    def slow_in_c(prompts, completions, **_):
        calls.append(len(completions))
        if len(completions) > 1:
            raise RuntimeError("refuses batches")
        if completions[0] == "slow":
            hashlib.pbkdf2_hmac("sha256", b"x", b"salt", 4_000_000)
        return [1.0]

    scores = RewardScorer([NamedReward("c", slow_in_c)], timeout_s=0.3).score([""] * 4, ["slow", "a", "b", "c"])
    assert calls == [4, 1]
    assert torch.isnan(scores.total).all() and scores.failures == {"c": 4}
    (message,) = _warnings(caplog)
    assert "4 of 4 samples score None" in message and "1 timed out, 0 raised, 3 not tried (retry budget spent)" in message
    assert "batch call failed (RuntimeError: refuses batches)" in message


def test_a_function_failing_on_every_sample_logs_one_line_with_the_count_and_the_first_error(caplog):
    def always(prompts, completions, **_):
        raise ValueError(f"cannot score {completions[0]!r}")

    scores = RewardScorer([NamedReward("always", always), NamedReward("len", length_reward)]).score([""] * 64, [str(i) for i in range(64)])
    assert scores.failures == {"always": 64, "len": 0} and torch.isnan(scores.per_function["always"]).all()
    (message,) = _warnings(caplog)
    assert message.startswith("reward 'always': 64 of 64 samples score None; the batch call failed (ValueError: cannot score '0')")
    assert message.endswith("0 timed out, 64 raised, 0 not tried (retry budget spent); first: sample 0: ValueError: cannot score '0'")


def test_reward_metrics_keep_failures_and_none_frac_when_nothing_could_be_scored():
    from cohort.training.metrics import BatchFacts, reward_metrics

    n = 4
    facts = BatchFacts(
        total=torch.full((n,), math.nan, dtype=torch.float64), per_function={"math": torch.full((n,), math.nan, dtype=torch.float64)},
        failures={"math": 4}, correct=torch.zeros(n, dtype=torch.bool), lengths=torch.ones(n, dtype=torch.long),
        truncated=torch.zeros(n, dtype=torch.bool), trainable=torch.zeros(n, dtype=torch.bool),
    )
    metrics = reward_metrics(facts)
    assert metrics["reward/failures"] == 4 and metrics["reward/none_frac"] == 1.0
    assert math.isnan(metrics["reward/math/mean"]) and "reward/mean" not in metrics
    facts.total[0], facts.per_function["math"][0], facts.failures["math"] = 1.0, 1.0, 3
    metrics = reward_metrics(facts)
    assert metrics["reward/failures"] == 3 and metrics["reward/none_frac"] == 0.75 and metrics["reward/mean"] == 1.0


def test_time_limit_off_the_main_thread_uses_a_worker():
    outcome = {}

    def run():
        try:
            call_with_time_limit(lambda: time.sleep(5), 0.2)
        except RewardTimeout as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(3)
    assert "time limit of 0.2 s" in outcome["error"]


@pytest.mark.parametrize(
    "output, problem",
    [([1.0, 2.0], "returned 2 scores for 3 completions"), ("abc", "returned str"), ([1.0, "x", 2.0], "score 1 is 'x'")],
)
def test_malformed_output_is_a_failure(output, problem, caplog):
    def bad(prompts, completions, **_):
        return output

    scores = RewardScorer([NamedReward("bad", bad)]).score(PROMPTS, COMPLETIONS, COLUMNS)
    assert torch.isnan(scores.total).all()
    with pytest.raises(RewardFunctionError, match=problem):
        RewardScorer([NamedReward("bad", bad)], strict=True).score(PROMPTS, COMPLETIONS, COLUMNS)


def test_infinite_scores_become_none_or_raise_in_strict_mode():
    def infinite(prompts, completions, **_):
        return [float("inf"), 0.0, 1.0]

    scores = RewardScorer([NamedReward("inf", infinite)]).score(PROMPTS, COMPLETIONS, COLUMNS)
    assert math.isnan(scores.total[0]) and scores.failures["inf"] == 1
    with pytest.raises(RewardFunctionError, match="returned ±inf"):
        RewardScorer([NamedReward("inf", infinite)], strict=True).score(PROMPTS, COMPLETIONS, COLUMNS)


def test_builtin_rewards():
    assert FormatReward(r"-?\d+")(PROMPTS, [" 12", "1 2", "-3"]) == [1.0, 0.0, 1.0]
    r1 = FormatReward()
    assert r1([""], ["<think>a</think> <answer>4</answer>"]) == [1.0]
    assert r1([""], ["<answer>4</answer>"]) == [0.0]
    penalty = SoftOverlongPunishment(max_length=10, buffer=4)
    assert [penalty.penalty(n) for n in (6, 8, 10, 11)] == [0.0, -0.5, -1.0, -1.0]
    assert penalty([""] * 2, ["a", "b"], completion_ids=[[1] * 6, [1] * 9]) == [0.0, -0.75]


def test_a_format_pattern_that_backtracks_for_ages_scores_zero_at_its_time_limit(caplog):
    """(a|aa)+$ against 40 a's and a b tries every way of splitting them (~10^8 paths) in the regex
    engine's C code; the regex package's own timeout holds there, and only that completion is lost."""
    reward = FormatReward(r"(a|aa)+$", timeout_s=0.2)
    started = time.monotonic()
    assert reward([""] * 3, ["aaaa", "a" * 40 + "b", "aa"]) == [1.0, 0.0, 1.0]
    assert time.monotonic() - started < 0.2 + 2.0
    messages = [r.getMessage() for r in caplog.records if r.name == "cohort.rewards.builtin"]
    assert messages == ["format: matching '(a|aa)+$' ran past 0.2 s on 1 of 3 completions; they score 0"]
    with pytest.raises(ValueError, match="timeout_s must be a finite number of seconds > 0"):
        FormatReward(timeout_s=0)


def test_build_reward_from_specs():
    reward = build_reward({"name": "format", "weight": 0.5, "pattern": r"\d+"})
    assert reward.name == "format" and reward.weight == 0.5
    custom = build_reward({"name": "rewards.test_scorer:length_reward", "alias": "len"})
    assert custom.name == "len" and custom.fn(prompts=[""], completions=["abc"]) == [3.0]
    assert correctness_reward([reward, build_reward({"name": "exact_match"})]).name == "exact_match"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "exactmatch"}, "unknown reward 'exactmatch'; built-in rewards: code, exact_match, final_answer, format, math, reward_model"),
        ({"name": "format", "regex": "x"}, r"reward 'format' does not take options \['regex'\]; allowed: pattern"),
        ({"name": "format", "pattern": "("}, "not a valid regular expression"),
        ({"name": "no_such_module:f"}, "cannot import module 'no_such_module'"),
        ({"name": "rewards.test_scorer:missing"}, "has no attribute 'missing'"),
        ({"name": "rewards.test_scorer:length_reward", "x": 1}, "is a function; it takes no options"),
    ],
)
def test_bad_reward_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        build_reward(spec)


def test_several_failing_functions_make_one_line_per_call(caplog):
    """Two functions that fail in the same call: one warning line naming both, with each one's first error."""
    import logging

    def broken(prompts, completions, **_):
        raise ValueError("no answer column")

    def short(prompts, completions, **_):
        return [1.0]

    scorer = RewardScorer([NamedReward("broken", broken), NamedReward("short", short)], timeout_s=5)
    with caplog.at_level(logging.WARNING, logger="cohort.rewards.base"):
        scores = scorer.score(["p", "q"], ["a", "b"])
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "reward 'broken'" in lines[0] and "reward 'short' returned 1 scores for 2" in lines[0]
    assert scores.first_errors == {"broken": "sample 0: ValueError: no answer column", "short": "returned 1 scores for 2 completions"}
