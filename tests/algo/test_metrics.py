"""pass@k and maj@k."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import maj_at_k, majority_answer, pass_at_k


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_pass_at_k_is_monotone_in_k_and_exact(data):
    n = data.draw(st.integers(1, 60))
    c = data.draw(st.integers(0, n))
    values = pass_at_k(torch.tensor([n] * n), torch.tensor([c] * n), 1)  # shape check with many rows
    assert values.shape == (n,)
    previous = -1.0
    for k in range(1, n + 1):
        value = float(pass_at_k(torch.tensor([n]), torch.tensor([c]), k)[0])
        exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert abs(value - exact) < 1e-9
        assert value >= previous - 1e-12
        previous = value
    assert float(pass_at_k(torch.tensor([n]), torch.tensor([c]), 1)[0]) == pytest.approx(c / n)


def test_pass_at_k_mixed_problems():
    values = pass_at_k(torch.tensor([10, 4, 5]), torch.tensor([3, 2, 0]), 2)
    expected = [1 - math.comb(7, 2) / math.comb(10, 2), 1 - 1 / 6, 0.0]
    assert torch.allclose(values, torch.tensor(expected, dtype=torch.float64))


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="k=6 is larger than the number of samples n=5"):
        pass_at_k(torch.tensor([5]), torch.tensor([1]), 6)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        pass_at_k(torch.tensor([5]), torch.tensor([1]), 0)
    with pytest.raises(ValueError, match=r"num_correct must lie in \[0, num_samples\]"):
        pass_at_k(torch.tensor([5]), torch.tensor([6]), 1)
    with pytest.raises(ValueError, match="integer counts"):
        pass_at_k(torch.tensor([5.0]), torch.tensor([1.0]), 1)


def test_majority_vote_rules():
    # the most frequent answer wins
    assert majority_answer(["3", "4", "4"]) == "4"
    # a tie goes to the answer that appears first
    assert majority_answer(["5", "7", "7", "5"]) == "5"
    # samples without an answer do not vote; all None -> None
    assert majority_answer([None, None, "2"]) == "2"
    assert majority_answer([None, None]) is None


def test_maj_at_k_uses_exactly_the_first_k_samples():
    answers = ["1", "2", "2", "1", "1"]
    assert maj_at_k(answers, "2", 3) == 1.0
    assert maj_at_k(answers, "2", 5) == 0.0
    assert maj_at_k(answers, "1", 1) == 1.0
    assert maj_at_k([None, None], "1", 2) == 0.0
    with pytest.raises(ValueError, match="k=6 is larger than the number of samples"):
        maj_at_k(answers, "1", 6)
