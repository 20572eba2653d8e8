"""The training forward's shared-prompt path: rows with the same prompt run it once (cohort.models).

It must give the same log-probs, entropies and gradients as scoring every row on its own.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import token_id

from cohort.models import scoring
from cohort.models.scoring import (
    completion_logprobs,
    completion_logprobs_and_entropy,
    shared_prompts,
)
from cohort.rollout import left_pad

PROMPTS = ["what is 12+30?", "hi", "a longer prompt here"]
COMPLETIONS = [["42\n", "4", "forty-two"], ["hello there", "yo", "hi!"], ["x", "yz", "abc d"]]


def _group_batch(tokenizer):
    """Three prompts, each with three completions (rows group-contiguous); garbage in the padding."""
    prompt_rows = [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(3)]
    prompt_ids, prompt_mask = left_pad(prompt_rows, tokenizer.pad_token_id)  # [9, Lp]
    prompt_ids = torch.where(prompt_mask, prompt_ids, torch.arange(prompt_ids.numel()).view_as(prompt_ids) % 7)
    rows = [[token_id(tokenizer, c) for c in text] for group in COMPLETIONS for text in group]
    width = max(len(r) for r in rows)
    completion_ids = torch.full((len(rows), width), -100, dtype=torch.long)  # out-of-vocab garbage on padding
    for i, row in enumerate(rows):
        completion_ids[i, : len(row)] = torch.tensor(row)
    return prompt_ids, prompt_mask, completion_ids, completion_ids != -100


def _per_row(monkeypatch):
    """Force the one-forward-per-row path."""
    monkeypatch.setattr(scoring, "_prefix_sharing_pays", lambda model, distinct, rows: False)


def test_shared_prompts_ignore_padding_values():
    ids = torch.tensor([[9, 5, 6], [0, 5, 6], [4, 4, 6], [7, 5, 6]])
    mask = torch.tensor([[False, True, True], [False, True, True], [True, True, True], [False, True, True]])
    first, inverse = shared_prompts(ids, mask)
    assert inverse.tolist()[0] == inverse.tolist()[1] == inverse.tolist()[3] != inverse.tolist()[2]
    assert sorted(first.tolist()) == [0, 2]
    assert (inverse[first] == torch.arange(len(first))).all()


def _token_inputs(model, seen: list) -> torch.utils.hooks.RemovableHandle:
    """Record the [batch, length] of every call of the model's token embedding (one per forward)."""
    return model.get_input_embeddings().register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))


def test_shared_path_equals_one_forward_per_row(tiny_model, char_tokenizer, monkeypatch):
    batch = _group_batch(char_tokenizer)
    completion_logprobs(tiny_model, *batch)  # the one-time check of the model class's output head
    seen = []
    hook = _token_inputs(tiny_model, seen)
    shared = completion_logprobs_and_entropy(tiny_model, *batch, temperature=0.7)
    hook.remove()
    rows, width = batch[2].shape
    assert seen == [(len(PROMPTS), batch[0].shape[1]), (rows, width - 1)]  # each prompt once, then completions
    _per_row(monkeypatch)
    separate = completion_logprobs_and_entropy(tiny_model, *batch, temperature=0.7)
    mask = batch[3]
    for got, expected in zip(shared, separate):
        torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=0)
        assert torch.isfinite(got).all()


def test_shared_path_gives_the_same_gradients(tiny_llama, char_tokenizer, monkeypatch):
    batch = _group_batch(char_tokenizer)
    mask = batch[3]
    weights = torch.linspace(-1.0, 1.0, mask.numel()).view_as(mask)  # [n, T], like per-token advantages

    def gradients():
        tiny_llama.zero_grad(set_to_none=True)
        logprobs = completion_logprobs(tiny_llama, *batch)
        torch.where(mask, weights * logprobs, 0.0).sum().backward()
        return [p.grad.clone() for p in tiny_llama.parameters()]

    shared = gradients()
    _per_row(monkeypatch)
    separate = gradients()
    for got, expected in zip(shared, separate):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in shared)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_shared_path_runs_without_autograd(tiny_llama, char_tokenizer, context):
    batch = _group_batch(char_tokenizer)
    expected = completion_logprobs(tiny_llama, *batch).detach()
    with context():
        logprobs = completion_logprobs(tiny_llama, *batch)
    assert not logprobs.requires_grad
    torch.testing.assert_close(logprobs, expected)


def test_one_token_completions_need_only_the_prompt_forward(tiny_llama, char_tokenizer, monkeypatch):
    prompt_ids, prompt_mask, completion_ids, completion_mask = _group_batch(char_tokenizer)
    batch = (prompt_ids, prompt_mask, completion_ids[:, :1], completion_mask[:, :1])
    shared = completion_logprobs(tiny_llama, *batch)
    _per_row(monkeypatch)
    torch.testing.assert_close(shared, completion_logprobs(tiny_llama, *batch), atol=1e-5, rtol=0)


def test_activation_checkpointing_in_training_scores_each_row(tiny_llama, char_tokenizer):
    """Checkpointing turns the KV cache off in training mode, so prompts cannot be shared then."""
    enable = getattr(tiny_llama, "activation_checkpointing_enable", None) or tiny_llama.gradient_checkpointing_enable
    enable()
    tiny_llama.train()
    batch = _group_batch(char_tokenizer)
    completion_logprobs(tiny_llama, *batch)  # the one-time check of the model class's output head
    seen = []
    _token_inputs(tiny_llama, seen)
    completion_logprobs(tiny_llama, *batch).sum().backward()
    forward_calls = {shape for shape in seen}  # the backward's recomputation repeats the forward's shape
    assert forward_calls == {(batch[2].shape[0], batch[0].shape[1] + batch[2].shape[1])}  # every row on its own
