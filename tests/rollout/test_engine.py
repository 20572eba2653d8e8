"""cohort.rollout: sampling, the decode loop with a shared prefilled cache, and the Rollout value."""

from __future__ import annotations

import pytest
import torch

import cohort.rollout.engine as engine
from cohort.models.scoring import completion_logprobs
from cohort.rollout import (
    Rollout,
    SamplingParams,
    filter_logits,
    generate_rollout,
    left_pad,
    sample_from_probs,
)
from cohort.rollout.batch import concat_rollouts

PROMPT_TEXTS = ["what is 12+30?", "hi", "count: 1, 2, 3,", "q"]


def _prompts(tokenizer, texts=PROMPT_TEXTS):
    return [tokenizer(text)["input_ids"] for text in texts]


def _rollout(model, tokenizer, group_size=1, seed=0, prompts=None, **params):
    params.setdefault("max_new_tokens", 12)
    return generate_rollout(
        model,
        prompts if prompts is not None else _prompts(tokenizer),
        group_size,
        SamplingParams(**params),
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
        tokenizer=tokenizer,
    )


def _hf_greedy(model, tokenizer, eos_ids, max_new_tokens=12, prompts=None):
    """model.generate's greedy completions, right-padded, EOS kept."""
    prompt_ids, prompt_mask = left_pad(prompts or _prompts(tokenizer), tokenizer.pad_token_id)
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask.long(),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_ids) or None,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[:, prompt_ids.shape[1] :]


def _token_ending_some_rows(completions):
    """A token of row 0 (after its first two) that some other row never produces."""
    for token in completions[0, 2:].tolist():
        if not all(token in row for row in completions[1:].tolist()):
            return token
    raise AssertionError("every token of row 0 occurs in every row; choose other prompts")


def _common_tokens(rollout, count):
    """The ``count`` most frequent generated tokens: an EOS set that ends rows at ragged times."""
    values, counts = rollout.completion_ids[rollout.completion_mask].unique(return_counts=True)
    return tuple(values[counts.argsort(descending=True)[:count]].tolist())


# ----------------------------------------------------------------------------------------------
# Agreement with the model: sampling log-probs and greedy decoding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compact_fraction", [0.0, 0.25, 2.0], ids=["always-compact", "default", "never-compact"])
def test_sampling_logprobs_equal_teacher_forced_logprobs(tiny_model, char_tokenizer, monkeypatch, compact_fraction):
    monkeypatch.setattr(engine, "COMPACT_FRACTION", compact_fraction)
    probe = _rollout(tiny_model, char_tokenizer, group_size=4, temperature=0.7)
    eos_ids = _common_tokens(probe, 6)  # rows end at different steps, so finished rows get dropped
    rollout = _rollout(tiny_model, char_tokenizer, group_size=4, temperature=0.7, eos_token_ids=eos_ids)
    assert rollout.logprob_temperature == 0.7
    assert "eos" in rollout.finish_reasons
    assert len(set(rollout.completion_lengths.tolist())) > 2

    prompt_ids, prompt_mask = rollout.expanded_prompts()
    with torch.no_grad():
        forward = completion_logprobs(
            tiny_model, prompt_ids, prompt_mask, rollout.completion_ids, rollout.completion_mask, temperature=0.7
        )
    mask = rollout.completion_mask
    torch.testing.assert_close(rollout.sampling_logprobs[mask], forward[mask], atol=1e-5, rtol=0)
    assert (rollout.sampling_logprobs[~mask] == 0).all()
    assert rollout.sampling_logprobs.dtype == torch.float32


def test_logprobs_ignore_top_k_and_top_p(tiny_llama, char_tokenizer):
    rollout = _rollout(tiny_llama, char_tokenizer, group_size=3, temperature=1.3, top_k=5, top_p=0.9)
    prompt_ids, prompt_mask = rollout.expanded_prompts()
    with torch.no_grad():
        forward = completion_logprobs(
            tiny_llama, prompt_ids, prompt_mask, rollout.completion_ids, rollout.completion_mask, temperature=1.3
        )
    mask = rollout.completion_mask
    torch.testing.assert_close(rollout.sampling_logprobs[mask], forward[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("group_size", [1, 3])
def test_greedy_equals_model_generate(tiny_model, char_tokenizer, group_size):
    free_run = _hf_greedy(tiny_model, char_tokenizer, eos_ids=())
    eos_ids = (char_tokenizer.eos_token_id, _token_ending_some_rows(free_run))
    expected = _hf_greedy(tiny_model, char_tokenizer, eos_ids)
    rollout = _rollout(tiny_model, char_tokenizer, group_size=group_size, temperature=0.0, eos_token_ids=eos_ids)
    assert rollout.logprob_temperature == 1.0
    assert "eos" in rollout.finish_reasons and "length" in rollout.finish_reasons
    completions = rollout.completion_ids.view(len(PROMPT_TEXTS), group_size, -1)
    width = completions.shape[-1]
    for sample in range(group_size):
        assert torch.equal(completions[:, sample], expected[:, :width])
    assert (expected[:, width:] == char_tokenizer.pad_token_id).all()


def test_prefill_runs_once_per_prompt_and_decoding_one_token_per_row(tiny_llama, char_tokenizer):
    calls = []
    tiny_llama.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    prompts = _prompts(char_tokenizer)
    _rollout(tiny_llama, char_tokenizer, group_size=5, temperature=1.0, max_new_tokens=6)
    longest = max(len(p) for p in prompts)
    assert calls[0] == (len(prompts), longest)  # P rows, not P*G
    assert calls[1:] == [(len(prompts) * 5, 1)] * 5  # no forward after the last token


# ----------------------------------------------------------------------------------------------
# Sampling controls and stopping
# ----------------------------------------------------------------------------------------------


def test_top_k_one_equals_greedy(tiny_qwen2, char_tokenizer):
    greedy = _rollout(tiny_qwen2, char_tokenizer, group_size=2, temperature=0.0)
    top1 = _rollout(tiny_qwen2, char_tokenizer, group_size=2, temperature=0.9, top_k=1, seed=7)
    assert torch.equal(top1.completion_ids, greedy.completion_ids)


def test_first_eos_of_a_set_ends_a_row_and_is_kept(tiny_llama, char_tokenizer):
    free = _rollout(tiny_llama, char_tokenizer, temperature=0.0, max_new_tokens=10)
    assert free.finish_reasons == ["length"] * len(PROMPT_TEXTS)
    eos_ids = (int(free.completion_ids[0, 3]), int(free.completion_ids[1, 5]))
    stopped = _rollout(tiny_llama, char_tokenizer, temperature=0.0, max_new_tokens=10, eos_token_ids=eos_ids)
    for row in range(len(PROMPT_TEXTS)):
        tokens = free.completion_ids[row].tolist()
        hits = [t for t, token in enumerate(tokens) if token in eos_ids]
        length = hits[0] + 1 if hits else 10
        assert stopped.completion_mask[row].tolist() == [t < length for t in range(stopped.completion_ids.shape[1])]
        assert stopped.completion_ids[row, :length].tolist() == tokens[:length]
        assert (stopped.completion_ids[row, length:] == char_tokenizer.pad_token_id).all()
        assert stopped.finish_reasons[row] == ("eos" if hits else "length")
    assert stopped.finish_reasons[0] == stopped.finish_reasons[1] == "eos"


def test_budget_hit_finishes_with_length(tiny_llama, char_tokenizer):
    rollout = _rollout(tiny_llama, char_tokenizer, group_size=2, temperature=1.0, max_new_tokens=7, eos_token_ids=())
    assert rollout.finish_reasons == ["length"] * rollout.num_completions
    assert rollout.completion_mask.all() and rollout.completion_ids.shape[1] == 7
    assert rollout.truncated.all()


def test_stop_string_ends_a_row_with_reason_stop(tiny_llama, char_tokenizer):
    free = _rollout(tiny_llama, char_tokenizer, temperature=0.0, max_new_tokens=10)
    texts = [char_tokenizer.convert_ids_to_tokens(row) for row in free.completion_ids.tolist()]
    # A two-character stop string taken from the middle of row 0 (plain characters only).
    start = next(i for i in range(1, 8) if all(len(c) == 1 for c in texts[0][i : i + 2]))
    stop = "".join(texts[0][start : start + 2])
    rollout = _rollout(tiny_llama, char_tokenizer, temperature=0.0, max_new_tokens=10, stop_strings=[stop])
    for row, tokens in enumerate(texts):
        ends = [t + 1 for t in range(len(tokens)) if "".join(tokens[: t + 1]).endswith(stop)]
        length = ends[0] if ends else 10
        assert int(rollout.completion_lengths[row]) == length
        assert rollout.finish_reasons[row] == ("stop" if ends else "length")
    assert rollout.finish_reasons[0] == "stop"
    assert stop in rollout.decode_completions(char_tokenizer)[0]
    assert rollout.decode_completions(char_tokenizer)[0].endswith(stop)


def test_same_seed_same_rollout_different_seed_different_samples(tiny_qwen2, char_tokenizer):
    first = _rollout(tiny_qwen2, char_tokenizer, group_size=3, seed=11, temperature=1.0)
    second = _rollout(tiny_qwen2, char_tokenizer, group_size=3, seed=11, temperature=1.0)
    other = _rollout(tiny_qwen2, char_tokenizer, group_size=3, seed=12, temperature=1.0)
    assert torch.equal(first.completion_ids, second.completion_ids)
    assert torch.equal(first.sampling_logprobs, second.sampling_logprobs)
    assert first.finish_reasons == second.finish_reasons
    assert not torch.equal(first.completion_ids, other.completion_ids)
    # the G samples of one prompt differ from each other too
    assert not torch.equal(first.completion_ids[0], first.completion_ids[1])


def test_first_token_frequencies_follow_the_tempered_distribution(tiny_llama, char_tokenizer):
    prompt = _prompts(char_tokenizer, ["2+2="])
    with torch.no_grad():
        logits = tiny_llama(torch.tensor(prompt)).logits[:, -1]  # [1, V]
    draws = 6000
    for top_k, tolerance in ((None, 0.06), (4, 0.04)):
        rollout = _rollout(
            tiny_llama, char_tokenizer, draws, prompts=prompt, temperature=0.8, top_k=top_k, max_new_tokens=1
        )
        expected = torch.softmax(filter_logits(logits / 0.8, top_k, 1.0), dim=-1)[0]  # [V]
        observed = torch.bincount(rollout.completion_ids[:, 0], minlength=expected.numel()) / draws
        assert 0.5 * (observed - expected).abs().sum() < tolerance  # total variation distance
        if top_k:
            assert observed[expected == 0].sum() == 0


def test_filter_logits_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda top_p: torch.isfinite(filter_logits(logits, None, top_p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.79) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert torch.isfinite(filter_logits(logits, 2, 1.0))[0].tolist() == [True, True, False, False]


def test_filter_logits_wide_nucleus_matches_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1000, generator=generator) * torch.tensor([[0.1], [0.5], [1], [2], [4], [8]])
    for top_p in (0.3, 0.9, 0.99):
        probs = torch.softmax(logits, -1)
        sorted_probs, order = probs.sort(-1, descending=True)
        keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < top_p
        expected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        assert torch.equal(torch.isfinite(filter_logits(logits, None, top_p)), expected)


def test_sample_from_probs_never_draws_zero_probability_tokens():
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.8, 0.0]]).expand(20000, -1)
    tokens = sample_from_probs(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=5)
    assert counts[[0, 2, 4]].sum() == 0
    assert abs(counts[3].item() / 20000 - 0.8) < 0.015


def test_nan_logits_are_reported_not_sampled(tiny_llama, char_tokenizer):
    with torch.no_grad():
        tiny_llama.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        _rollout(tiny_llama, char_tokenizer, temperature=1.0, max_new_tokens=3)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(max_new_tokens=4, temperature=-0.1), "temperature must be a finite number >= 0"),
        (dict(max_new_tokens=4, temperature=float("nan")), "temperature"),
        (dict(max_new_tokens=4, top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=4, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=4, top_k=-1), "top_k must be None or an integer >= 0"),
        (dict(max_new_tokens=4, eos_token_ids=[-3]), "eos_token_ids"),
        (dict(max_new_tokens=4, stop_strings=[""]), "stop_strings"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_normalise_their_fields():
    params = SamplingParams(max_new_tokens=3, temperature=0, eos_token_ids=[5, 2, 5], stop_strings="\n\n")
    assert params.eos_token_ids == (2, 5) and params.stop_strings == ("\n\n",)
    assert params.greedy and params.logprob_temperature == 1.0


def test_generate_rejects_bad_requests(tiny_llama, char_tokenizer):
    params = SamplingParams(max_new_tokens=4)
    good = _prompts(char_tokenizer)
    max_positions = tiny_llama.config.max_position_embeddings

    def call(prompts=good, group_size=2, sampling=params, tokenizer=None):
        return generate_rollout(
            tiny_llama, prompts, group_size, sampling, pad_token_id=0, generator=torch.Generator(), tokenizer=tokenizer
        )

    with pytest.raises(ValueError, match="prompt_ids is empty"):
        call(prompts=[])
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        call(group_size=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        call(prompts=[good[0], []])
    with pytest.raises(ValueError, match=f"more than the model's {max_positions} positions"):
        call(prompts=[[5] * (max_positions + 1)])
    with pytest.raises(ValueError, match="plus max_new_tokens"):
        call(prompts=[[5] * (max_positions - 2)])
    with pytest.raises(ValueError, match="vocabulary"):
        call(prompts=[[5, 10_000]])
    with pytest.raises(ValueError, match="need the tokenizer"):
        call(sampling=SamplingParams(max_new_tokens=4, stop_strings=["ab"]))
    with pytest.raises(ValueError, match="params must be a SamplingParams"):
        call(sampling={"max_new_tokens": 4})


# ----------------------------------------------------------------------------------------------
# The Rollout value
# ----------------------------------------------------------------------------------------------


def test_rollout_layout_and_conveniences(tiny_llama, char_tokenizer):
    rollout = _rollout(tiny_llama, char_tokenizer, group_size=3, temperature=1.0, max_new_tokens=5)
    num_prompts = len(PROMPT_TEXTS)
    assert rollout.num_prompts == num_prompts and rollout.num_completions == 3 * num_prompts
    assert rollout.group_ids.tolist() == [g for g in range(num_prompts) for _ in range(3)]
    assert rollout.prompt_mask[:, -1].all() and rollout.prompt_mask.dtype == torch.bool
    assert rollout.completion_mask.dtype == torch.bool and rollout.completion_ids.dtype == torch.long
    assert not rollout.sampling_logprobs.is_inference()  # usable in autograd graphs as constants
    ids, mask = rollout.expanded_prompts()
    assert torch.equal(ids[3:6], rollout.prompt_ids[1].expand(3, -1)) and torch.equal(mask[3], rollout.prompt_mask[1])
    assert rollout.completion_lengths.tolist() == [len(t) for t in rollout.completion_token_lists()]

    subset = rollout.select_groups([2, 0])
    assert subset.num_prompts == 2 and subset.num_completions == 6
    assert torch.equal(subset.prompt_ids[0], rollout.prompt_ids[2])
    assert torch.equal(subset.completion_ids[:3], rollout.completion_ids[6:9])
    assert torch.equal(subset.sampling_logprobs[3:], rollout.sampling_logprobs[:3])
    assert subset.finish_reasons == rollout.finish_reasons[6:9] + rollout.finish_reasons[:3]
    with pytest.raises(ValueError, match="group indices"):
        rollout.select_groups([num_prompts])
    assert rollout.to("cpu").finish_reasons == rollout.finish_reasons


def test_concat_rollouts_repads_and_keeps_group_order(tiny_llama, char_tokenizer):
    short, long = _prompts(char_tokenizer, ["hi"]), _prompts(char_tokenizer, ["a longer one"])
    first = _rollout(tiny_llama, char_tokenizer, group_size=2, prompts=short, max_new_tokens=3)
    second = _rollout(tiny_llama, char_tokenizer, group_size=2, prompts=long, max_new_tokens=6)
    both = concat_rollouts([first, second])
    assert both.num_prompts == 2 and both.group_size == 2
    assert both.completion_ids.shape == (4, 6) and both.prompt_ids.shape == (2, second.prompt_ids.shape[1])
    assert both.completion_token_lists() == first.completion_token_lists() + second.completion_token_lists()
    assert both.prompt_mask[0].sum() == first.prompt_mask.sum() and both.prompt_mask[:, -1].all()
    assert not both.completion_mask[:2, 3:].any() and (both.sampling_logprobs[:2, 3:] == 0).all()
    with pytest.raises(ValueError, match="share group_size"):
        concat_rollouts([first, _rollout(tiny_llama, char_tokenizer, group_size=1, max_new_tokens=2)])
    with pytest.raises(ValueError, match="at least one"):
        concat_rollouts([])


def test_rollout_rejects_inconsistent_fields():
    ids, mask = left_pad([[1, 2], [3]], 0)
    fields = dict(
        prompt_ids=ids,
        prompt_mask=mask,
        group_size=2,
        completion_ids=torch.zeros(4, 3, dtype=torch.long),
        completion_mask=torch.ones(4, 3, dtype=torch.bool),
        sampling_logprobs=torch.zeros(4, 3),
        finish_reasons=["length"] * 4,
        logprob_temperature=1.0,
        pad_token_id=0,
    )
    Rollout(**fields)
    with pytest.raises(ValueError, match=r"completion_ids must have shape \[P\*G, T\]"):
        Rollout(**{**fields, "completion_ids": torch.zeros(3, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="finish_reasons must be in"):
        Rollout(**{**fields, "finish_reasons": ["done"] * 4})
    with pytest.raises(ValueError, match="bool"):
        Rollout(**{**fields, "completion_mask": torch.ones(4, 3)})


def test_left_pad_pads_on_the_left():
    ids, mask = left_pad([[7, 8, 9], [4]], pad_token_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
