"""Advantage estimators: invariants (hypothesis), unequal groups, GAE, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import (
    OUTCOME_ESTIMATORS,
    gae_advantages,
    outcome_advantages,
    process_advantages,
)

F64 = torch.float64

reward_values = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)


@st.composite
def grouped_rewards(draw, allow_nan: bool = False):
    group_size = draw(st.integers(2, 8))
    num_groups = draw(st.integers(1, 5))
    element = st.one_of(reward_values, st.just(float("nan"))) if allow_nan else reward_values
    values = draw(st.lists(element, min_size=group_size * num_groups, max_size=group_size * num_groups))
    return torch.tensor(values, dtype=F64), group_size


@settings(max_examples=200, deadline=None)
@given(
    data=grouped_rewards(allow_nan=True),
    estimator=st.sampled_from([name for name in OUTCOME_ESTIMATORS.names() if OUTCOME_ESTIMATORS.get(name).needs_group]),
)
def test_advantages_of_each_group_sum_to_zero(data, estimator):
    """Spec §2.2: normalisation preserves the zero mean of every group's valid advantages (every
    estimator with a group baseline)."""
    rewards, group_size = data
    result = outcome_advantages(rewards, group_size, estimator=estimator, ddof=1, eps=1e-4)
    assert torch.isfinite(result.values).all()
    assert torch.equal(result.valid, ~torch.isnan(rewards))
    assert (result.values[~result.valid] == 0).all()
    sums = result.values.view(-1, group_size).sum(dim=1)
    scale = rewards.nan_to_num().abs().max().clamp(min=1.0)
    assert torch.allclose(sums, torch.zeros_like(sums), atol=1e-9 * scale * group_size)


@settings(max_examples=100, deadline=None)
@given(
    group_size=st.integers(2, 8),
    values=st.lists(st.integers(-50, 50), min_size=8, max_size=8),
    shift=st.integers(-1000, 1000),
    scale=st.sampled_from([0.5, 2.0, 3.0, 10.0]),
)
def test_group_norm_is_invariant_to_affine_reward_changes(group_size, values, shift, scale):
    """Shifting or positively scaling a task's rewards leaves GRPO's advantages unchanged."""
    rewards = torch.tensor(values[: 8 - 8 % group_size], dtype=F64)
    base = outcome_advantages(rewards, group_size, ddof=0, eps=0.0).values
    moved = outcome_advantages(rewards * scale + shift, group_size, ddof=0, eps=0.0).values
    nonzero = base != 0
    assert torch.allclose(moved[nonzero], base[nonzero], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(data=grouped_rewards())
def test_rloo_is_scaled_centering(data):
    """Dr. GRPO App. A: (G/(G-1)) * centred advantage = leave-one-out advantage."""
    rewards, group_size = data
    centred = outcome_advantages(rewards, group_size, estimator="group_center").values
    rloo = outcome_advantages(rewards, group_size, estimator="rloo").values
    assert torch.allclose(rloo, centred * group_size / (group_size - 1), atol=1e-9)
    grouped = rewards.view(-1, group_size)
    others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    direct = (grouped - others).view(-1)
    degenerate = (grouped.max(1).values == grouped.min(1).values).repeat_interleave(group_size)
    assert torch.allclose(rloo[~degenerate], direct[~degenerate], atol=1e-9)


def test_batch_norm_uses_group_mean_and_batch_std():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0], dtype=F64)
    result = outcome_advantages(rewards, 2, estimator="batch_norm", ddof=1, eps=0.0).values
    batch_std = rewards.std()
    expected = torch.tensor([0.5, -0.5, 1.0, -1.0], dtype=F64) / batch_std
    assert torch.allclose(result, expected, atol=1e-12)


def test_explicit_group_ids_allow_unequal_groups():
    rewards = torch.tensor([1.0, 0.0, 5.0, 3.0, 4.0, 7.0], dtype=F64)
    ids = torch.tensor([7, 7, 2, 2, 2, 9])  # groups of 2, 3 and 1 (the single sample gets 0)
    result = outcome_advantages(rewards, group_ids=ids, ddof=0, eps=0.0).values
    expected = [1.0, -1.0, (5 - 4) / (2 / 3) ** 0.5, -1 / (2 / 3) ** 0.5, 0.0, 0.0]
    assert torch.allclose(result, torch.tensor(expected, dtype=F64), atol=1e-12)


def test_group_with_a_single_valid_reward_gets_zero():
    result = outcome_advantages(torch.tensor([float("nan"), 1.0, 0.0, 1.0], dtype=F64), 2)
    assert result.values.tolist()[:2] == [0.0, 0.0]
    assert result.valid.tolist() == [False, True, True, True]


def test_float32_rewards_stay_float32_and_float64_stay_float64():
    assert outcome_advantages(torch.tensor([1.0, 0.0]), 2).values.dtype == torch.float32
    assert outcome_advantages(torch.tensor([1.0, 0.0], dtype=F64), 2).values.dtype == F64


class TestOutcomeBadInput:
    def test_batch_not_divisible_by_group_size(self):
        with pytest.raises(ValueError, match="not divisible by group_size=4"):
            outcome_advantages(torch.zeros(6), 4)

    @pytest.mark.parametrize("group_size", [1, 0, -2, 2.0, True])
    def test_group_size_below_two(self, group_size):
        with pytest.raises(ValueError, match="group_size must be an int >= 2"):
            outcome_advantages(torch.zeros(4), group_size)

    @pytest.mark.parametrize("value", [float("inf"), -float("inf")])
    def test_infinite_reward_raises(self, value):
        with pytest.raises(ValueError, match=r"rewards contains ±inf at index \[2\]"):
            outcome_advantages(torch.tensor([0.0, 1.0, value, 1.0]), 2)

    def test_strict_raises_on_nan(self):
        with pytest.raises(ValueError, match="NaN at index \\[1\\] and strict=True"):
            outcome_advantages(torch.tensor([0.0, float("nan")]), 2, strict=True)

    def test_wrong_shape(self):
        with pytest.raises(ValueError, match=r"rewards must be 1-D \[N\]"):
            outcome_advantages(torch.zeros(2, 2), 2)

    def test_integer_rewards(self):
        with pytest.raises(ValueError, match="floating"):
            outcome_advantages(torch.tensor([1, 0]), 2)

    def test_unknown_estimator_lists_the_allowed(self):
        with pytest.raises(ValueError, match="allowed: batch_norm, group_center, group_norm, reinforce, rloo"):
            outcome_advantages(torch.zeros(2), 2, estimator="gae")

    def test_bad_ddof_and_eps(self):
        with pytest.raises(ValueError, match="ddof must be 0"):
            outcome_advantages(torch.zeros(2), 2, ddof=2)
        with pytest.raises(ValueError, match="eps must be >= 0"):
            outcome_advantages(torch.zeros(2), 2, eps=-1.0)

    def test_both_or_neither_grouping(self):
        with pytest.raises(ValueError, match="exactly one of group_size"):
            outcome_advantages(torch.zeros(2))
        with pytest.raises(ValueError, match="exactly one of group_size"):
            outcome_advantages(torch.zeros(2), 2, group_ids=torch.tensor([0, 0]))

    def test_group_ids_shape(self):
        with pytest.raises(ValueError, match=r"group_ids must have shape \[3\]"):
            outcome_advantages(torch.zeros(3), group_ids=torch.tensor([0, 0]))


# --- process supervision --------------------------------------------------------------------------


@st.composite
def process_batch(draw):
    group_size = draw(st.integers(2, 4))
    num_groups = draw(st.integers(1, 3))
    num_tokens = draw(st.integers(1, 8))
    n = group_size * num_groups
    lengths, ends, rewards, masks = [], [], [], []
    max_steps = 4
    for _ in range(n):
        length = draw(st.integers(0, num_tokens))
        positions = sorted(draw(st.sets(st.integers(1, max(length, 1)), max_size=min(length, max_steps))))
        if length == 0:
            positions = []
        k = len(positions)
        lengths.append(length)
        ends.append(positions + [0] * (max_steps - k))
        rewards.append(draw(st.lists(reward_values, min_size=k, max_size=k)) + [0.0] * (max_steps - k))
        masks.append([True] * k + [False] * (max_steps - k))
    return (
        torch.tensor(rewards, dtype=F64),
        torch.tensor(ends),
        torch.tensor(masks),
        torch.tensor(lengths),
        num_tokens,
        group_size,
    )


@settings(max_examples=200, deadline=None)
@given(batch=process_batch())
def test_process_advantages_are_reward_to_go_of_normalised_steps(batch):
    rewards, ends, mask, lengths, num_tokens, group_size = batch
    result = process_advantages(rewards, ends, mask, lengths, num_tokens, group_size, ddof=1, eps=1e-4)
    values = result.values
    assert values.shape == (rewards.shape[0], num_tokens)
    assert torch.isfinite(values).all()
    for i in range(rewards.shape[0]):
        # nothing after the completion's last step end; within a step the value is constant
        last_end = int(ends[i][mask[i]].max()) if mask[i].any() else 0
        assert (values[i, last_end:] == 0).all()
        previous = 0
        for end in ends[i][mask[i]].tolist():
            segment = values[i, previous:end]
            assert torch.all(segment == segment[0])
            previous = end
    # the normalised step rewards of a group sum to zero: sum over samples of A_{i,1} is 0
    first = values[:, 0].view(-1, group_size).sum(1)
    assert torch.allclose(first, torch.zeros_like(first), atol=1e-7)


def test_process_nan_step_voids_the_sample():
    rewards = torch.tensor([[1.0, float("nan")], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]], dtype=F64)
    ends = torch.tensor([[1, 2], [1, 2], [1, 2], [1, 2]])
    mask = torch.ones(4, 2, dtype=torch.bool)
    result = process_advantages(rewards, ends, mask, torch.tensor([2, 2, 2, 2]), 2, 2)
    assert result.valid.tolist() == [False, True, True, True]
    assert (result.values[0] == 0).all()
    # the group's pool keeps sample 1's two steps {0, 2}: normalised -/+ 1/sqrt(2) (sample std)
    assert torch.allclose(result.values[1], torch.tensor([0.0, 2**-0.5], dtype=F64), atol=1e-3)


def test_process_sample_without_steps_gets_zero():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    ends = torch.tensor([[1, 3], [0, 0]])
    mask = torch.tensor([[True, True], [False, False]])
    result = process_advantages(rewards, ends, mask, torch.tensor([3, 2]), 3, 2, ddof=0, eps=0.0)
    assert torch.equal(result.values[1], torch.zeros(3, dtype=F64))
    # pooled R = {1, 0}: normalised (+1, -1); reward-to-go over tokens 1..3 is [0, -1, -1]
    assert torch.allclose(result.values[0], torch.tensor([0.0, -1.0, -1.0], dtype=F64))


class TestProcessBadInput:
    def call(self, ends, mask=None, lengths=(4, 4)):
        ends = torch.tensor(ends)
        mask = torch.ones_like(ends, dtype=torch.bool) if mask is None else torch.tensor(mask)
        rewards = torch.zeros(ends.shape, dtype=F64)
        return process_advantages(rewards, ends, mask, torch.tensor(lengths), 4, 2)

    def test_not_strictly_increasing(self):
        with pytest.raises(ValueError, match="strictly increasing per completion; row 1 has 2 then 2"):
            self.call([[1, 2], [2, 2]])

    def test_out_of_bounds_high(self):
        with pytest.raises(ValueError, match=r"step_ends\[0, 1\] = 5 is out of bounds"):
            self.call([[1, 5], [1, 2]])

    def test_out_of_bounds_beyond_length(self):
        with pytest.raises(ValueError, match=r"\|o_1\| = 2"):
            self.call([[1, 2], [1, 3]], lengths=(4, 2))

    def test_zero_index(self):
        with pytest.raises(ValueError, match=r"step_ends\[0, 0\] = 0 is out of bounds"):
            self.call([[0, 2], [1, 2]])

    def test_mask_with_holes(self):
        with pytest.raises(ValueError, match="real steps first"):
            self.call([[1, 2], [1, 2]], mask=[[False, True], [True, True]])

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="step_ends must have the shape"):
            process_advantages(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool), torch.tensor([4, 4]), 4, 2)

    def test_lengths_beyond_tokens(self):
        with pytest.raises(ValueError, match="completion_lengths must lie in"):
            self.call([[1, 2], [1, 2]], lengths=(4, 9))


# --- GAE ------------------------------------------------------------------------------------------


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.2, 9.0]], dtype=F64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    gamma, lam = 0.9, 0.8
    adv, ret = gae_advantages(rewards, values, mask, gamma, lam)
    # row 0: deltas with V(after end) = 0
    d2 = 1.0 - 0.7
    d1 = 0.0 + 0.9 * 0.7 - 0.6
    d0 = 0.0 + 0.9 * 0.6 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    # row 1: length 2, the padded 9.0s must not matter
    e1 = 2.0 - 0.2
    e0 = 0.0 + 0.9 * 0.2 - 0.1
    expected = torch.tensor([[a0, a1, a2], [e0 + gamma * lam * e1, e1, 0.0]], dtype=F64)
    assert torch.allclose(adv, expected, atol=1e-12)
    assert torch.allclose(ret, torch.where(mask, expected + values, torch.zeros((), dtype=F64)), atol=1e-12)


def test_gae_with_lambda_one_gamma_one_is_return_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.25, 0.125]], dtype=F64)
    adv, ret = gae_advantages(rewards, values, torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0)
    assert torch.allclose(ret, torch.tensor([[6.0, 5.0, 3.0]], dtype=F64))
    assert torch.allclose(adv, ret - values)


def test_gae_bad_input():
    with pytest.raises(ValueError, match="share one shape"):
        gae_advantages(torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma and lam must lie in"):
        gae_advantages(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), gamma=1.5)


def test_degenerate_groups_flags_zero_range_and_too_few_valid():
    from cohort.algo import degenerate_groups

    rewards = torch.tensor([0.1, 0.1, 1.0, 0.0, float("nan"), 1.0, float("nan"), float("nan")], dtype=F64)
    assert degenerate_groups(rewards, 2).tolist() == [True, False, True, True]


def test_process_unscored_sample_is_invalid_and_zero():
    rewards = torch.tensor([[1.0], [0.0], [0.0]], dtype=F64)
    ends = torch.tensor([[1], [1], [1]])
    mask = torch.tensor([[True], [True], [False]])
    scored = torch.tensor([True, True, False])
    result = process_advantages(rewards, ends, mask, torch.tensor([1, 1, 0]), 1, group_ids=torch.tensor([0, 0, 0]), scored=scored, ddof=0, eps=0.0)
    assert result.valid.tolist() == [True, True, False]
    assert result.values[:, 0].tolist() == [1.0, -1.0, 0.0]
