"""Tests for the built-in multi-step task: generation, the held-out split, the answer and the gold step checker."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.data.multistep import (
    HARD_NEGATIVES,
    MAX_OPERAND,
    MAX_OPERATIONS,
    MAX_RESULT,
    MIN_OPERATIONS,
    NUM_SPLIT_PROBLEMS,
    check_steps,
    completion_steps,
    final_answer,
    first_error,
    hard_negative,
    is_step_line,
    iter_problems,
    make_problem,
    parse_prompt,
    prefix_correct,
    random_problem,
    split_of,
    split_problems,
    well_formed,
)
from cohort.data.tasks import load_task

PROMPT = "12+7-5+30="
GOLD = "12+7=19\n19-5=14\n14+30=44"


def evaluate_chain(prompt: str) -> list[int]:
    """Independent re-computation of the running results, left to right, from the prompt text."""
    tokens = prompt.rstrip("=").replace("-", " - ").replace("+", " + ").split()
    running, results = int(tokens[0]), []
    for operator, operand in zip(tokens[1::2], tokens[2::2]):
        running = running + int(operand) if operator == "+" else running - int(operand)
        results.append(running)
    return results


# --- the generator -------------------------------------------------------------------------------


def test_make_problem_writes_one_operation_per_line():
    assert make_problem([12, 7, 5, 30], ["+", "-", "+"]) == {"prompt": PROMPT, "answer": "44", "solution": GOLD}
    assert make_problem([0, 0, 0], ["+", "-"]) == {"prompt": "0+0-0=", "answer": "0", "solution": "0+0=0\n0-0=0"}


@pytest.mark.parametrize(
    ("operands", "operators", "message"),
    [
        ([1, 2], ["+"], "operators"),
        ([1, 2, 3, 4, 5, 6], ["+"] * 5, "operators"),
        ([1, 2, 3], ["+", "*"], "operators must be"),
        ([1, 100, 3], ["+", "+"], "operands"),
        ([5, 3, 4], ["-", "-"], r"running result must be in 0\.\.99"),
        ([60, 50, 1], ["+", "-"], r"running result must be in 0\.\.99"),
    ],
)
def test_make_problem_rejects_bad_input(operands, operators, message):
    with pytest.raises(ValueError, match=message):
        make_problem(operands, operators)


def test_parse_prompt_inverts_make_problem_and_rejects_other_text():
    assert parse_prompt(PROMPT) == ([12, 7, 5, 30], ["+", "-", "+"])
    for bad in ("12+7", "12=", "12+7=19", "a+b=", "3-5-1=", ""):
        with pytest.raises(ValueError):
            parse_prompt(bad)


def test_random_problems_are_well_formed_and_cover_the_range():
    rng = random.Random(0)
    problems = [random_problem(rng) for _ in range(3000)]
    counts = {len(parse_prompt(p["prompt"])[1]) for p in problems}
    assert counts == set(range(MIN_OPERATIONS, MAX_OPERATIONS + 1))
    for problem in problems:
        results = evaluate_chain(problem["prompt"])
        assert all(0 <= r <= MAX_RESULT for r in results)
        assert problem["answer"] == str(results[-1])
        assert problem["solution"].split("\n")[-1].endswith("=" + problem["answer"])
        assert check_steps(problem["prompt"], problem["solution"]) == [True] * len(results)
        assert set(problem["prompt"] + problem["solution"]) <= set("0123456789+-=\n")
    operands = {n for p in problems for n in parse_prompt(p["prompt"])[0]}
    assert operands == set(range(MAX_OPERAND + 1))
    assert {"+", "-"} <= set("".join(p["prompt"] for p in problems))
    answers = [int(p["answer"]) for p in problems]
    assert all(200 < sum(a // 10 == decile for a in answers) < 400 for decile in range(10))  # spread evenly


# --- splits ----------------------------------------------------------------------------------------


def test_split_of_is_a_stable_function_of_the_prompt():
    prompts = [random_problem(random.Random(i))["prompt"] for i in range(2000)]
    assert [split_of(p) for p in prompts] == [split_of(p) for p in prompts]
    share = sum(split_of(p) == "test" for p in prompts) / len(prompts)
    assert 0.07 < share < 0.13


def test_split_problems_are_distinct_disjoint_and_in_their_split():
    train, test = split_problems("train"), split_problems("test")
    assert len(train) == NUM_SPLIT_PROBLEMS["train"] and len(test) == NUM_SPLIT_PROBLEMS["test"]
    train_prompts, test_prompts = {r["prompt"] for r in train}, {r["prompt"] for r in test}
    assert len(train_prompts) == len(train) and len(test_prompts) == len(test)
    assert not train_prompts & test_prompts
    assert all(split_of(p) == "train" for p in train_prompts) and all(split_of(p) == "test" for p in test_prompts)
    assert split_problems("train") == train  # deterministic, fixed order
    assert set(train[0]) == {"prompt", "answer", "solution"}
    with pytest.raises(ValueError, match="split"):
        split_problems("validation")


def test_the_training_stream_never_yields_a_held_out_problem():
    first = list(itertools.islice(iter_problems("train", seed=3), 3000))
    assert all(split_of(p["prompt"]) == "train" for p in first)
    assert first == list(itertools.islice(iter_problems("train", seed=3), 3000))
    assert first != list(itertools.islice(iter_problems("train", seed=4), 3000))
    held_out = {r["prompt"] for r in split_problems("test")}
    assert not held_out & {p["prompt"] for p in first}


def test_load_task_builds_the_multistep_task_with_the_final_answer_reward():
    task = load_task("multistep")
    assert task.name == "multistep"
    assert len(task.train) == NUM_SPLIT_PROBLEMS["train"] and len(task.test) == NUM_SPLIT_PROBLEMS["test"]
    assert set(task.train.column_names) == {"prompt", "answer", "solution"}
    assert [dict(spec)["name"] for spec in task.default_rewards] == ["final_answer"]


# --- the final answer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        (GOLD, "44"),
        (GOLD + "\n", "44"),
        ("  12+7=19 \n\n19-5=14\n14+30=45  ", "45"),
        ("12+7-5+30=44", "44"),  # merged steps: the answer is still the number after the last '='
        ("12+7=19\n19-5=14\n14+30=", None),
        ("12+7=19\n19-5=14\n44", None),
        ("12+7=19\n19-5=14\n14+30=044", None),
        ("", None),
        ("\n\n", None),
    ],
)
def test_final_answer_is_the_last_steps_result(completion, answer):
    assert final_answer(completion) == answer


# --- the gold step checker -------------------------------------------------------------------------


def test_check_steps_accepts_the_gold_solution():
    assert check_steps(PROMPT, GOLD) == [True, True, True]
    assert first_error(PROMPT, GOLD) is None
    assert check_steps(PROMPT, " 12+7=19\n\n19-5=14 \n14+30=44\n") == [True, True, True]


@pytest.mark.parametrize(
    ("completion", "verdicts", "first"),
    [
        ("12+7=18\n18-5=13\n13+30=43", [False, True, True], 1),  # wrong sum, then correct carrying on
        ("12+7=19\n19-5=15\n15+30=45", [True, False, True], 2),
        ("12+7=19\n19-5=14\n14+30=45", [True, True, False], 3),
        ("12+7=19\n18-5=13\n13+30=43", [True, False, True], 2),  # wrong carry of the previous result
        ("12+7=19\n19+5=24\n24+30=54", [True, False, True], 2),  # wrong operator
        ("12+7=19\n19-6=13\n13+30=43", [True, False, True], 2),  # wrong operand
        ("12+7=19\n19+30=49", [True, False], 2),  # skipped an operation
    ],
)
def test_check_steps_finds_the_wrong_step(completion, verdicts, first):
    assert check_steps(PROMPT, completion) == verdicts
    assert first_error(PROMPT, completion) == first


@pytest.mark.parametrize(
    ("completion", "verdicts"),
    [
        ("12+7=19\n19-5=\n14+30=44", [True, False, False]),  # no result: the next step has nothing to carry
        ("12+7=19\n19-5=14=14\n14+30=44", [True, False, False]),
        ("12+7-5=14\n14+30=44", [False, False]),  # merged steps: wrong operand for step 2 as well
        ("12+07=19\n19-5=14\n14+30=44", [False, False, True]),  # leading zero
        ("19\n14\n44", [False, False, False]),
        ("12+7=19<unk>\n19-5=14\n14+30=44", [False, False, True]),
    ],
)
def test_check_steps_rejects_malformed_steps(completion, verdicts):
    assert check_steps(PROMPT, completion) == verdicts


def test_check_steps_rejects_steps_past_the_last_operation_and_first_error_counts_missing_ones():
    assert check_steps(PROMPT, GOLD + "\n44+0=44") == [True, True, True, False]
    assert first_error(PROMPT, GOLD + "\n44+0=44") == 4
    assert check_steps(PROMPT, "12+7=19\n19-5=14") == [True, True]
    assert first_error(PROMPT, "12+7=19\n19-5=14") == 3
    assert check_steps(PROMPT, "") == [] and first_error(PROMPT, "") == 1


def test_check_steps_gives_one_verdict_per_step_for_any_marker():
    completion = "12+7=19 ; 19-5=14 ;; 14+30=44"
    assert completion_steps(completion, ";") == ["12+7=19", "19-5=14", "14+30=44"]
    assert check_steps(PROMPT, completion, marker=";") == [True, True, True]
    assert final_answer(completion, marker=";") == "44"
    with pytest.raises(ValueError, match="marker"):
        check_steps(PROMPT, GOLD, marker="")


# --- the format the rule enforces, prefix correctness, hard negatives -------------------------------


def test_well_formed_is_one_operation_per_line_and_one_line_per_operation():
    prompt = "12+7-5+30="
    assert well_formed(prompt, "12+7=19\n19-5=14\n14+30=44")
    assert well_formed(prompt, "12+7=19\n19-5=15\n15+30=45")  # wrong steps are still well formed
    assert not well_formed(prompt, "12+7-5=14\n14+30=44")  # merged lines
    assert not well_formed(prompt, "12+7=19\n19-5=14")  # a missing line
    assert not well_formed(prompt, "12+7=19\n19-5=14\n14+30=44\n44+0=44")  # an extra line
    assert not well_formed(prompt, "12+7=19\n19-5=14\n14+30=44=44")  # a garbled line
    assert not well_formed(prompt, "")
    assert well_formed("Q: 1+2?", "1+2=3") and not well_formed("Q: 1+2?", "1+2+0=3")  # no problem to count: lines only
    assert [is_step_line(s) for s in ("0+0=0", "07+1=8", "1+2=3 ", "1*2=2")] == [True, False, False, False]


def test_prefix_correct_is_the_running_and_of_the_step_verdicts():
    prompt = "12+7-5+30="
    assert prefix_correct(prompt, "12+7=19\n19-5=14\n14+30=44") == [True, True, True]
    assert prefix_correct(prompt, "12+7=19\n19-5=15\n15+30=45") == [True, False, False]  # step 3 is right but after an error
    assert prefix_correct(prompt, "12+7=19\n19-5=14\n14+30=44\n44+0=44") == [True, True, True, False]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(HARD_NEGATIVES))
def test_hard_negatives_carry_one_mistake_of_their_kind(seed, kind):
    rng = random.Random(seed)
    row = random_problem(rng)
    text = hard_negative(row["prompt"], kind, rng)
    if text is None:
        return
    verdicts = check_steps(row["prompt"], text)
    operations = row["solution"].count("\n") + 1
    assert not all(verdicts) or len(verdicts) != operations  # never the gold solution
    if kind in ("wrong_result", "wrong_carry"):
        assert well_formed(row["prompt"], text) and verdicts.count(False) == 1  # one bad line; the rest carries on correctly
        assert final_answer(text) != row["answer"]
    elif kind == "merged_lines":
        assert not well_formed(row["prompt"], text) and final_answer(text) == row["answer"]  # right answer, wrong format
    else:
        assert len(verdicts) == operations - 1


def test_split_problems_by_number_of_operations():
    four = split_problems("test", operations=4)
    assert len(four) == NUM_SPLIT_PROBLEMS["test"] and all(row["solution"].count("\n") == 3 for row in four)
    assert not {r["prompt"] for r in four} & {r["prompt"] for r in split_problems("train", operations=4)}
    assert all(split_of(r["prompt"]) == "test" for r in four)
    with pytest.raises(ValueError, match="operations must be in 2..4"):
        split_problems("test", operations=5)
