"""Tests for the multi-step task's rewards (final answer, gold step scores) and for the bundled multi-step model."""

from __future__ import annotations

import pytest
import torch

from cohort.assets import BUILTIN_MODELS, resolve_builtin
from cohort.data.multistep import check_steps, final_answer, split_problems
from cohort.models.loading import eos_token_ids, load_policy, load_tokenizer
from cohort.rewards import build_reward, correctness_reward
from cohort.rewards.multistep import FinalAnswerReward, GoldStepScorer
from cohort.rewards.process_model import StepScores, split_steps
from cohort.rollout import generate_rollout
from cohort.rollout.sampling import SamplingParams

MODEL = "builtin:multistep"
MODEL_DIR = resolve_builtin(MODEL)  # what the trainer passes to the loaders
PROMPT = "12+7-5+30="
GOLD = "12+7=19\n19-5=14\n14+30=44"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL_DIR)


def encode(tokenizer, text: str, eos: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])


# --- FinalAnswerReward -----------------------------------------------------------------------------


def test_final_answer_reward_scores_the_last_steps_result():
    reward = FinalAnswerReward()
    completions = [GOLD, "12+7=19\n19-5=15\n15+30=45", "12+7=19\n19-5=14\n14+30=44\n", "44", ""]
    scores = reward([PROMPT] * 5, completions, answer=["44"] * 5)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert reward([PROMPT, PROMPT], [GOLD, GOLD], answer=[" 44 ", None]) == [1.0, None]
    assert reward.extract_answer("1+2=3\n3+4=7") == "7" and reward.extract_answer("7") is None
    assert reward.is_correctness and reward.__name__ == "final_answer"
    with pytest.raises(KeyError, match="answer"):
        reward([PROMPT], [GOLD], solution=[GOLD])


def test_the_rule_refuses_what_the_format_forbids():
    """Merged, malformed, missing or extra lines score 0 whatever the last number says; strict_format=False
    is the old rule (the last number only). A template around the problem still has its lines counted."""
    reward = FinalAnswerReward()
    completions = ["12+7-5=14\n14+30=44", "12+7=19\n19-5=14\n14+30=44=44", "19-5=14\n14+30=44",
                   "12+7=19\n19-5=14\n14+30=44\n44+0=44", "12+7=19\n19-5=15\n14+30=44"]
    assert reward([PROMPT] * 5, completions, answer=["44"] * 5) == [0.0, 0.0, 0.0, 0.0, 1.0]  # the last: right answer, wrong step
    assert FinalAnswerReward(strict_format=False)([PROMPT] * 5, completions, answer=["44"] * 5) == [1.0] * 5
    assert reward(["Solve: 12+7-5+30="] * 2, [GOLD, completions[0]], answer=["44", "44"]) == [1.0, 0.0]
    assert build_reward({"name": "final_answer", "strict_format": False}).fn([PROMPT], [completions[0]], answer=["44"]) == [1.0]


def test_final_answer_is_a_registered_correctness_reward():
    named = build_reward({"name": "final_answer", "answer_column": "target"})
    assert named.name == "final_answer" and correctness_reward([named]) is named
    assert named.fn([PROMPT], [GOLD], target=["44"]) == [1.0]


# --- GoldStepScorer --------------------------------------------------------------------------------


def test_gold_step_scorer_rewards_each_step_with_the_gold_verdict(tokenizer):
    completions = [GOLD, "12+7=19\n19-5=15\n15+30=45", "12+7=19\n\n19-5=14\n14+30=44\n44+0=44", "x"]
    ids = [encode(tokenizer, text, eos=True) for text in completions]
    scores = GoldStepScorer(tokenizer)([PROMPT] * 4, completions, ids)
    assert all(isinstance(s, StepScores) for s in scores)
    assert [s.rewards for s in scores] == [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0]]
    for text, s in zip(completions, scores):
        assert s.rewards == [float(v) for v in check_steps(PROMPT, text)]
        assert len(s.ends) == len(s.rewards)


def test_gold_step_scorer_ends_line_up_with_the_policy_tokens(tokenizer):
    raw = [GOLD, "12+7=19\n\n19-5=14\n14+30=44\n", "\n12+7=18\n18-5=13", "12+7=19\n19-5=14 \n14+30=44"]
    ids = [encode(tokenizer, text, eos=True) for text in raw]
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)  # the texts the trainer scores (no space token)
    scores = GoldStepScorer(tokenizer, marker="\n")([PROMPT] * 4, completions, ids)
    assert [len(s.ends) for s in scores] == [3, 3, 2, 3]
    assert scores[0].ends == [7, 15, 24]  # one token per character: "12+7=19", "\n19-5=14", "\n14+30=44"
    for text, row_ids, s in zip(completions, ids, scores):
        steps = [text[a:b] for a, b in split_steps(text, "\n")]
        assert s.ends == sorted(s.ends) and all(1 <= end <= len(row_ids) for end in s.ends)
        for step, end in zip(steps, s.ends):
            decoded = tokenizer.decode(row_ids[:end], skip_special_tokens=True)
            assert decoded.endswith(step)  # the step's last token is the end-th token ...
            assert not tokenizer.decode(row_ids[: end - 1], skip_special_tokens=True).endswith(step)  # ... not later


def test_gold_step_scorer_needs_a_marker(tokenizer):
    with pytest.raises(ValueError, match="marker"):
        GoldStepScorer(tokenizer, marker="")


# --- the bundled model -----------------------------------------------------------------------------


def test_the_multistep_model_is_a_builtin_with_a_char_tokenizer(tokenizer):
    assert MODEL_DIR == str(BUILTIN_MODELS["multistep"])
    text = "12+7-5+30=" + GOLD
    ids = encode(tokenizer, text)
    assert len(ids) == len(text) and tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(encode(tokenizer, "1\n\n2", eos=True), skip_special_tokens=True) == "1\n\n2"


def test_the_bundled_model_is_partly_right_when_sampled(tokenizer):
    model = load_policy(MODEL_DIR)
    rows = split_problems("test")[:50]
    params = SamplingParams(max_new_tokens=48, temperature=1.0, eos_token_ids=eos_token_ids(tokenizer, model.generation_config))
    generator = torch.Generator().manual_seed(0)
    prompt_ids = [encode(tokenizer, row["prompt"]) for row in rows]
    rollout = generate_rollout(model, prompt_ids, 4, params, pad_token_id=tokenizer.pad_token_id, generator=generator)
    completions = tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)  # N = 200 texts
    answers = [row["answer"] for row in rows for _ in range(4)]
    scores = FinalAnswerReward()([row["prompt"] for row in rows for _ in range(4)], completions, answer=answers)
    accuracy = sum(scores) / len(scores)
    assert 0.1 < accuracy < 0.8, f"final-answer accuracy {accuracy:.3f} on 50 held-out problems x 4 samples"
    assert sum(final_answer(text) is not None for text in completions) > 0.9 * len(completions)  # it writes the format
