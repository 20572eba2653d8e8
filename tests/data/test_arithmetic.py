"""Tests for the built-in arithmetic task and for the demo model + tokenizer shipped with cohort."""

from __future__ import annotations

import importlib.util
import itertools
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import cohort
from cohort.data.arithmetic import (
    MAX_OPERAND,
    arithmetic_splits,
    iter_problems,
    make_problem,
    split_of,
    split_problems,
)

DEMO_MODEL_DIR = Path(cohort.__file__).parent / "assets" / "demo_model"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_demo_model.py"
PROMPT_PATTERN = re.compile(r"^(\d{1,2})([+-])(\d{1,2})=$")
NUM_SPACE = (MAX_OPERAND + 1) ** 2 + (MAX_OPERAND + 1) * (MAX_OPERAND + 2) // 2  # a+b (all), a-b (a >= b)


def evaluate_prompt(prompt: str) -> str:
    """Independent re-computation of a prompt's answer from its text."""
    match = PROMPT_PATTERN.match(prompt)
    assert match, f"malformed prompt {prompt!r}"
    left, operator, right = int(match[1]), match[2], int(match[3])
    return str(left + right if operator == "+" else left - right)


# --- the generator -------------------------------------------------------------------------------


def test_make_problem_formats_prompt_and_answer():
    assert make_problem(47, "+", 85) == {"prompt": "47+85=", "answer": "132"}
    assert make_problem(85, "-", 47) == {"prompt": "85-47=", "answer": "38"}
    assert make_problem(7, "-", 7) == {"prompt": "7-7=", "answer": "0"}
    assert make_problem(0, "+", 99) == {"prompt": "0+99=", "answer": "99"}


@pytest.mark.parametrize(
    ("left", "operator", "right", "message"),
    [
        (1, "*", 2, "operator"),
        (-1, "+", 2, "operands"),
        (100, "+", 2, "operands"),
        (3, "-", 5, "larger-first"),
    ],
)
def test_make_problem_rejects_bad_input(left, operator, right, message):
    with pytest.raises(ValueError, match=message):
        make_problem(left, operator, right)


def test_answers_are_correct_for_every_problem_of_both_splits():
    for split in ("train", "test"):
        for row in split_problems(split):
            assert row["answer"] == evaluate_prompt(row["prompt"]), row
            assert row["answer"].isdigit(), row


def test_splits_partition_the_whole_problem_space():
    train = {row["prompt"] for row in split_problems("train")}
    test = {row["prompt"] for row in split_problems("test")}
    assert train.isdisjoint(test)
    assert len(train) + len(test) == NUM_SPACE == 15_050
    assert len(split_problems("train")) == len(train)  # no duplicates inside a split
    assert 0.08 < len(test) / NUM_SPACE < 0.12  # ~10% held out
    assert all(split_of(prompt) == "test" for prompt in test)


def test_arithmetic_splits_sizes_and_disjointness():
    train, test = arithmetic_splits(seed=0, num_train=5_000, num_test=500)
    assert len(train) == 5_000 and len(test) == 500
    test_prompts = [row["prompt"] for row in test]
    assert len(set(test_prompts)) == 500  # each held-out problem counts once
    assert {row["prompt"] for row in train}.isdisjoint(test_prompts)
    assert all(split_of(row["prompt"]) == "train" for row in train)
    assert all(split_of(prompt) == "test" for prompt in test_prompts)
    assert all(set(row) >= {"prompt", "answer"} for row in train + test)


def test_no_seed_leaks_held_out_problems_into_training():
    held_out = {row["prompt"] for row in split_problems("test")}
    for seed in range(5):
        drawn = {row["prompt"] for row in itertools.islice(iter_problems("train", seed), 2_000)}
        assert drawn.isdisjoint(held_out)


def test_splits_are_deterministic_per_seed_and_differ_across_seeds():
    assert arithmetic_splits(seed=3, num_train=200) == arithmetic_splits(seed=3, num_train=200)
    train_a, test_a = arithmetic_splits(seed=0, num_train=200)
    train_b, test_b = arithmetic_splits(seed=1, num_train=200)
    assert train_a != train_b and test_a != test_b


def test_training_stream_matches_the_held_out_distribution():
    # Both splits are uniform over their part of the space: 10,000 of the 15,050 problems are
    # additions, so both should be ~66% additions (a mismatch would bias held-out accuracy).
    stream = list(itertools.islice(iter_problems("train", seed=0), 20_000))
    stream_share = sum("+" in row["prompt"] for row in stream) / len(stream)
    test = split_problems("test")
    test_share = sum("+" in row["prompt"] for row in test) / len(test)
    assert abs(stream_share - 10_000 / NUM_SPACE) < 0.02
    assert abs(test_share - 10_000 / NUM_SPACE) < 0.05


def test_rows_are_independent_copies():
    first = next(iter_problems("train", seed=0))
    first["answer"] = "tampered"
    assert next(iter_problems("train", seed=0))["answer"] != "tampered"


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_test"):
        arithmetic_splits(num_test=len(split_problems("test")) + 1)
    with pytest.raises(ValueError, match="num_train"):
        arithmetic_splits(num_train=-1)
    with pytest.raises(ValueError, match="split"):
        split_problems("validation")
    with pytest.raises(ValueError, match="split"):
        next(iter_problems("dev"))


# --- the shipped demo model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_tokenizer():
    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


@pytest.fixture(scope="module")
def demo_model():
    model, loading_info = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, output_loading_info=True)
    return model.eval(), loading_info


def test_demo_model_folder_is_complete_and_small():
    names = {path.name for path in DEMO_MODEL_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    total_bytes = sum(path.stat().st_size for path in DEMO_MODEL_DIR.rglob("*") if path.is_file())
    assert total_bytes <= 10 * 1024 * 1024


def test_demo_model_loads_every_weight(demo_model):
    model, loading_info = demo_model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not loading_info["missing_keys"] and not loading_info["unexpected_keys"]
    assert sum(p.numel() for p in model.parameters()) <= 2_400_000


def test_demo_tokenizer_is_character_level_with_pad_and_eos(demo_tokenizer):
    tokenizer = demo_tokenizer
    ids = tokenizer("47+85=")["input_ids"]
    assert ids == tokenizer("47+85=", add_special_tokens=False)["input_ids"]  # no BOS to add
    assert tokenizer.convert_ids_to_tokens(ids) == list("47+85=")
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    answer = tokenizer("132", add_special_tokens=False)["input_ids"]
    with_specials = answer + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert tokenizer.decode(with_specials, skip_special_tokens=True) == "132"


def test_demo_model_greedy_answers_are_digits_then_eos(demo_model, demo_tokenizer):
    model, _ = demo_model
    tokenizer = demo_tokenizer
    _, test = arithmetic_splits(seed=0, num_train=0, num_test=100)
    encoded = tokenizer([row["prompt"] for row in test], return_tensors="pt", padding=True, return_token_type_ids=False)
    with torch.no_grad():
        output = model.generate(**encoded, do_sample=False, max_new_tokens=6)  # [100, T_prompt + T_new]
    completions = output[:, encoded["input_ids"].shape[1] :].tolist()
    digit_ids = set(tokenizer.convert_tokens_to_ids(list("0123456789")))
    correct = 0
    for row, completion in zip(test, completions):
        assert tokenizer.eos_token_id in completion, f"{row['prompt']} -> {tokenizer.decode(completion)!r}"
        answer_ids = completion[: completion.index(tokenizer.eos_token_id)]
        assert 1 <= len(answer_ids) <= 3 and set(answer_ids) <= digit_ids, tokenizer.decode(completion)
        correct += tokenizer.decode(completion, skip_special_tokens=True).strip() == row["answer"]
    # The demo model is meant to be partly capable: GRPO needs both right and wrong answers.
    assert 10 <= correct <= 90


def test_shipped_tokenizer_is_the_one_the_build_script_makes(demo_tokenizer):
    spec = importlib.util.spec_from_file_location("build_demo_model", BUILD_SCRIPT)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build_tokenizer().get_vocab() == demo_tokenizer.get_vocab()
    batch = build.sft_batch(demo_tokenizer, [make_problem(47, "+", 85), make_problem(5, "-", 3)])
    # Loss only on the answer and EOS; padding is not attended to.
    assert batch["labels"][0].tolist() == [-100] * 6 + demo_tokenizer("132")["input_ids"] + [demo_tokenizer.eos_token_id]
    assert batch["labels"][1].tolist() == [-100] * 4 + demo_tokenizer("2")["input_ids"] + [demo_tokenizer.eos_token_id] + [-100] * 4
    assert batch["attention_mask"][1].tolist() == [True] * 6 + [False] * 4
