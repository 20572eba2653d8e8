"""Outcome reward model and process reward model on tiny real HF models."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_char_tokenizer, tiny_config
from transformers import LlamaForSequenceClassification, LlamaForTokenClassification

from cohort.rewards import build_reward
from cohort.rewards.process_model import (
    ProcessRewardModel,
    split_steps,
    step_tensors,
    token_ends,
)


def save_classifier(directory, cls, num_labels, seed=0):
    tokenizer = build_char_tokenizer()
    config = tiny_config("llama", tokenizer)
    config.num_labels = num_labels
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model, tokenizer


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("rm"), LlamaForSequenceClassification, 1)


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("prm"), LlamaForTokenClassification, 2, seed=1)


def test_reward_model_scores_match_a_direct_forward(reward_model_dir):
    directory, model, tokenizer = reward_model_dir
    reward = build_reward({"name": "reward_model", "path": str(directory), "batch_size": 2})
    prompts, completions = ["2+2=", "1+1=", "10-3="], ["4", "three", "7"]
    scores = reward.fn(prompts, completions)
    for prompt, completion, score in zip(prompts, completions, scores):
        encoded = tokenizer(prompt + completion, return_tensors="pt")
        expected = model(**encoded).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)  # batching and padding change nothing


def test_reward_model_with_several_labels_needs_a_label(tmp_path):
    directory, _, _ = save_classifier(tmp_path, LlamaForSequenceClassification, 3)
    with pytest.raises(ValueError, match="has 3 output labels; set 'label'"):
        build_reward({"name": "reward_model", "path": str(directory)})
    reward = build_reward({"name": "reward_model", "path": str(directory), "label": 2})
    scores = reward.fn(["a"], ["b"])
    assert 0.0 < scores[0] < 1.0  # a probability


def test_reward_model_missing_directory_fails_fast(tmp_path):
    with pytest.raises(ValueError, match="not found locally"):
        build_reward({"name": "reward_model", "path": str(tmp_path / "missing")})


def test_split_steps_and_token_ends():
    text = "x=1\n\ny=2\nz=3"
    spans = split_steps(text, "\n")
    assert [text[a:b] for a, b in spans] == ["x=1", "y=2", "z=3"]
    tokenizer = build_char_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert token_ends(tokenizer, ids, [b for _, b in spans]) == [3, 8, 12]  # one token per character
    with pytest.raises(ValueError, match="non-empty"):
        split_steps(text, "")


def test_prm_scores_each_step_at_its_separator(prm_dir):
    directory, model, tokenizer = prm_dir
    prm = ProcessRewardModel(str(directory), tokenizer, step_marker=";", separator="\n")
    completion = "a=1;b=2;"
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    (scores,) = prm(["q:"], [completion], [ids])
    assert scores.ends == [3, 7]
    manual = tokenizer("q:")["input_ids"] + tokenizer("a=1\nb=2\n", add_special_tokens=False)["input_ids"]
    probs = model(input_ids=torch.tensor([manual])).logits.softmax(-1)[0, :, 1]
    separators = [i for i, t in enumerate(manual) if t == tokenizer.convert_tokens_to_ids("\n")]
    assert scores.rewards == pytest.approx(probs[separators].tolist(), abs=1e-5)


def test_step_tensors_pad_and_mark_unscored():
    from cohort.rewards.process_model import StepScores

    rewards, ends, mask, scored = step_tensors([StepScores([0.5, 0.25], [2, 4]), None, StepScores([], [])])
    assert rewards.tolist() == [[0.5, 0.25], [0.0, 0.0], [0.0, 0.0]]
    assert ends[0].tolist() == [2, 4] and mask.tolist() == [[True, True], [False, False], [False, False]]
    assert scored.tolist() == [True, False, True]
