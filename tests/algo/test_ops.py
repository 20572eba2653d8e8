"""Masked reductions and chunked per-token log-probs / entropy."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import entropy_from_logits, masked_mean, masked_sum, token_logprobs


def test_masked_reductions_ignore_nan_in_masked_slots():
    values = torch.tensor([[1.0, float("nan")], [float("inf"), 3.0]])
    mask = torch.tensor([[True, False], [False, True]])
    assert float(masked_sum(values, mask)) == 4.0
    assert masked_mean(values, mask, dim=1).tolist() == [1.0, 3.0]
    assert float(masked_mean(values, torch.zeros_like(mask))) == 0.0


def test_masked_reduction_gradient_is_zero_in_masked_slots():
    values = torch.tensor([1.0, float("nan"), 2.0], requires_grad=True)
    masked_mean(values, torch.tensor([True, False, True])).backward()
    assert values.grad.tolist() == [0.5, 0.0, 0.5]


def test_masked_reduction_bad_mask():
    with pytest.raises(ValueError, match="bool tensor"):
        masked_sum(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="shape of values"):
        masked_sum(torch.zeros(2), torch.ones(3, dtype=torch.bool))


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(1, 5),
    width=st.integers(1, 7),
    vocab=st.integers(2, 40),
    chunk=st.integers(1, 9),
    temperature=st.sampled_from([0.3, 0.7, 1.0, 1.6]),
    seed=st.integers(0, 1000),
)
def test_chunked_logprobs_and_entropy_match_full_log_softmax(rows, width, vocab, chunk, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, width, vocab, generator=g) * 4
    tokens = torch.randint(vocab, (rows, width), generator=g)
    full = torch.log_softmax(logits.double() / temperature, dim=-1)
    expected = full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    got = token_logprobs(logits, tokens, temperature, chunk_rows=chunk)
    assert got.dtype == torch.float32 and got.shape == (rows, width)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    entropy = entropy_from_logits(logits, temperature, chunk_rows=chunk)
    assert torch.allclose(entropy.double(), -(full.exp() * full).sum(-1), atol=1e-4)


def test_logprobs_are_float32_from_bf16_logits_and_differentiable():
    logits = torch.randn(2, 3, 11).to(torch.bfloat16).requires_grad_(True)
    tokens = torch.randint(11, (2, 3))
    out = token_logprobs(logits, tokens)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


def test_logprobs_bad_input():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="tokens must have the shape of logits without the vocabulary dim"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))
