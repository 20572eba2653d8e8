"""Process credit forms (docs/spec.md §4.1): DeepSeekMath's sum, PURE's min, and the outcome mixed
into the last step. Invariants with hypothesis, a reference implementation of the sum form, and the
failure PURE names: the sum form pays for merging steps, the min form does not."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.algo import PROCESS_CREDITS, process_advantages, step_problems

F64 = torch.float64
reward_values = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)


@st.composite
def process_batch(draw):
    """Groups of completions with 0-4 steps at strictly increasing ends within their lengths."""
    group_size, num_groups, num_tokens = draw(st.integers(2, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 8))
    lengths, ends, rewards, masks, max_steps = [], [], [], [], 4
    for _ in range(group_size * num_groups):
        length = draw(st.integers(0, num_tokens))
        positions = sorted(draw(st.sets(st.integers(1, max(length, 1)), max_size=min(length, max_steps)))) if length else []
        k = len(positions)
        lengths.append(length)
        ends.append(positions + [1] * (max_steps - k))
        rewards.append(draw(st.lists(reward_values, min_size=k, max_size=k)) + [0.0] * (max_steps - k))
        masks.append([True] * k + [False] * (max_steps - k))
    return (torch.tensor(rewards, dtype=F64), torch.tensor(ends), torch.tensor(masks), torch.tensor(lengths),
            num_tokens, group_size)


def reference_sum(rewards, ends, mask, lengths, num_tokens, group_size, ddof=1, eps=1e-4):
    """The sum form written out with loops: pool, normalise, add up the steps at or after each token."""
    out = torch.zeros(rewards.shape[0], num_tokens, dtype=F64)
    for g in range(rewards.shape[0] // group_size):
        rows = range(g * group_size, (g + 1) * group_size)
        pool = torch.tensor([float(rewards[i, j]) for i in rows for j in range(rewards.shape[1]) if mask[i, j]], dtype=F64)
        if pool.numel() < 2 or float(pool.max() - pool.min()) == 0:
            continue
        mean, std = pool.mean(), pool.std(correction=ddof)
        for i in rows:
            for t in range(1, num_tokens + 1):
                out[i, t - 1] = sum((rewards[i, j] - mean) / (std + eps) for j in range(rewards.shape[1])
                                    if mask[i, j] and ends[i, j] >= t)
    return out


@settings(max_examples=150, deadline=None)
@given(batch=process_batch())
def test_sum_form_matches_the_reference(batch):
    values = process_advantages(*batch, credit="sum").values
    assert torch.allclose(values, reference_sum(*batch), atol=1e-9)


def normalised_steps(batch) -> list[list[float]]:
    """Each completion's pooled, normalised step rewards, read off the sum form's jumps at step ends."""
    rewards, ends, mask, lengths, num_tokens, group_size = batch
    per_token = process_advantages(*batch, credit="sum").values
    out = []
    for i in range(rewards.shape[0]):
        real = ends[i][mask[i]].tolist()
        out.append([float(per_token[i, e - 1] - (per_token[i, real[k + 1] - 1] if k + 1 < len(real) else 0.0)) for k, e in enumerate(real)])
    return out


@settings(max_examples=150, deadline=None)
@given(batch=process_batch())
def test_min_form_is_the_smallest_normalised_reward_still_to_come_less_a_group_baseline(batch):
    """Each token's min-form credit is the smallest normalised reward of its own and later steps, less
    one number per group (the mean of its completions' smallest step); constant within a step, never
    falling as t advances, 0 after the last step; and the group's first-token credits add up to 0."""
    rewards, ends, mask, lengths, num_tokens, group_size = batch
    minimum = process_advantages(*batch, credit="min").values
    steps = normalised_steps(batch)
    for g in range(rewards.shape[0] // group_size):
        rows = [i for i in range(g * group_size, (g + 1) * group_size) if steps[i]]
        degenerate = all(v == 0 for i in rows for v in steps[i])  # a zero-variance pool: all credit 0
        baseline = 0.0 if degenerate or not rows else sum(min(steps[i]) for i in rows) / len(rows)
        for i in range(g * group_size, (g + 1) * group_size):
            real = ends[i][mask[i]].tolist()
            for k, end in enumerate(real):
                start = real[k - 1] if k else 0
                expected = 0.0 if degenerate else min(steps[i][k:]) - baseline
                assert torch.allclose(minimum[i, start:end], torch.full((end - start,), expected, dtype=F64), atol=1e-9)
            assert (minimum[i, (real[-1] if real else 0):] == 0).all()
        assert abs(sum(float(minimum[i, 0]) for i in rows)) < 1e-8


@settings(max_examples=100, deadline=None)
@given(batch=process_batch())
def test_one_step_completions_make_both_forms_equal(batch):
    """With one step each, the minimum is that step, and the sum form is centred already: the
    baseline is the mean of centred values, 0."""
    rewards, ends, mask, lengths, num_tokens, group_size = batch
    single = mask.clone()
    single[:, 1:] = False
    args = (rewards, ends, single, lengths, num_tokens, group_size)
    assert torch.allclose(process_advantages(*args, credit="sum").values, process_advantages(*args, credit="min").values, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(batch=process_batch(), weight=st.floats(-3, 3, allow_nan=False))
def test_zero_outcome_weight_or_no_outcome_changes_nothing(batch, weight):
    plain = process_advantages(*batch, credit="min").values
    outcome = torch.ones(batch[0].shape[0], dtype=F64)
    assert torch.equal(process_advantages(*batch, credit="min", outcome_rewards=outcome, outcome_weight=0.0).values, plain)
    assert torch.equal(process_advantages(*batch, credit="min", outcome_rewards=None, outcome_weight=weight).values, plain)


@settings(max_examples=100, deadline=None)
@given(batch=process_batch(), weight=st.floats(0.1, 3, allow_nan=False), credit=st.sampled_from(["sum", "min"]),
       outcome=st.lists(st.sampled_from([0.0, 1.0]), min_size=12, max_size=12))
def test_the_outcome_advantage_is_added_to_every_completion_token(batch, weight, credit, outcome):
    """Mixed in, the outcome moves every token of a completion by weight x its group-normalised outcome
    advantage (GRPO's outcome supervision), whatever the credit form; padding stays 0."""
    from cohort.algo import outcome_advantages

    rewards, ends, mask, lengths, num_tokens, group_size = batch
    outcomes = torch.tensor(outcome[: rewards.shape[0]], dtype=F64)
    plain = process_advantages(*batch, credit=credit).values
    mixed = process_advantages(*batch, credit=credit, outcome_rewards=outcomes, outcome_weight=weight).values
    expected = weight * outcome_advantages(outcomes, group_size).values  # [N]
    for i in range(rewards.shape[0]):
        length = int(lengths[i])
        assert torch.allclose(mixed[i, :length] - plain[i, :length], torch.full((length,), float(expected[i]), dtype=F64), atol=1e-9)
        assert (mixed[i, length:] == 0).all()


def test_a_nan_outcome_voids_the_sample_only_when_mixed_in():
    rewards, ends, mask = torch.tensor([[0.2], [0.4], [0.9]], dtype=F64), torch.ones(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.bool)
    outcome = torch.tensor([1.0, float("nan"), 0.0], dtype=F64)
    args = (rewards, ends, mask, torch.tensor([1, 1, 1]), 1, 3)
    assert process_advantages(*args, outcome_rewards=outcome, outcome_weight=1.0).valid.tolist() == [True, False, True]
    assert process_advantages(*args, outcome_rewards=outcome, outcome_weight=0.0).valid.all()


def test_merging_steps_pays_under_the_sum_form_and_not_under_the_min_form():
    """PURE's failure in small: completion 0 rates its first two steps 0.4 (below the group's mean),
    its siblings do better. Merging those two lines into one step (still rated 0.4) removes a
    below-mean term from the sum, so the sum form pays for the merge (-1.59 -> -0.76); under the min
    form the completion's credit is its weakest step less the group's baseline, and the merge does
    not raise it (-0.367 -> -0.378)."""
    lengths = torch.tensor([6, 6, 6])
    siblings = [[0.9, 0.9, 0.9], [0.2, 0.9, 0.9]]
    split = (torch.tensor([[0.4, 0.4, 0.9], *siblings], dtype=F64), torch.tensor([[2, 4, 6]] * 3), torch.ones(3, 3, dtype=torch.bool))
    merged = (torch.tensor([[0.4, 0.9, 0.0], *siblings], dtype=F64), torch.tensor([[4, 6, 1], [2, 4, 6], [2, 4, 6]]),
              torch.tensor([[True, True, False], [True] * 3, [True] * 3]))

    def first_token(batch, credit):
        rewards, ends, mask = batch
        return float(process_advantages(rewards, ends, mask, lengths, 6, 3, credit=credit, ddof=0, eps=0.0).values[0, 0])

    assert first_token(split, "sum") == pytest.approx(-1.5895213346, abs=1e-9)
    assert first_token(merged, "sum") == pytest.approx(-0.7559289460, abs=1e-9)
    assert first_token(merged, "sum") > first_token(split, "sum")
    assert first_token(split, "min") == pytest.approx(-0.3668126157, abs=1e-9)
    assert first_token(merged, "min") == pytest.approx(-0.3779644730, abs=1e-9)


def test_step_problems_flags_what_process_advantages_refuses():
    ends = torch.tensor([[1, 2], [2, 2], [1, 5], [0, 1]])
    mask = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    assert step_problems(ends, mask, torch.tensor([4, 4, 4, 4])).tolist() == [False, True, True, True]


def test_unknown_credit_form_lists_the_known_ones():
    assert PROCESS_CREDITS.names() == ["min", "sum"]
    with pytest.raises(ValueError, match="unknown process credit form 'max'; allowed: min, sum"):
        process_advantages(torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool),
                           torch.tensor([1, 1]), 1, 2, credit="max")
