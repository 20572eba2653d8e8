"""A completion's sample depends only on its own row's random numbers: splitting a batch across calls
(data-parallel ranks) with ``shard=(offset, total)`` gives exactly the samples of the whole batch."""

from __future__ import annotations

import pytest
import torch

from cohort.rollout import SamplingParams, generate_rollout


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_two_shards_sample_what_the_whole_batch_samples(tiny_llama, char_tokenizer, temperature, top_p):
    prompts = [char_tokenizer(text)["input_ids"] for text in ("1+2=", "33+4=", "5-1=", "12+30=")]
    params = SamplingParams(max_new_tokens=6, temperature=temperature, top_p=top_p, eos_token_ids=(char_tokenizer.eos_token_id,))
    common = dict(pad_token_id=char_tokenizer.pad_token_id, tokenizer=char_tokenizer)
    whole = generate_rollout(tiny_llama, prompts, 3, params, generator=torch.Generator().manual_seed(7), **common)
    parts = [
        generate_rollout(tiny_llama, prompts[:2], 3, params, generator=torch.Generator().manual_seed(7), shard=(0, 12), **common),
        generate_rollout(tiny_llama, prompts[2:], 3, params, generator=torch.Generator().manual_seed(7), shard=(6, 12), **common),
    ]
    assert whole.completion_token_lists() == parts[0].completion_token_lists() + parts[1].completion_token_lists()
    for part, rows in zip(parts, (slice(0, 6), slice(6, 12))):
        width = part.completion_ids.shape[1]
        assert torch.allclose(part.sampling_logprobs, whole.sampling_logprobs[rows, :width], atol=1e-6)


def test_a_shard_that_does_not_fit_is_refused(tiny_llama, char_tokenizer):
    params = SamplingParams(max_new_tokens=2, eos_token_ids=(char_tokenizer.eos_token_id,))
    with pytest.raises(ValueError, match="cannot hold these 4 completion rows"):
        generate_rollout(tiny_llama, [[5, 6]], 4, params, pad_token_id=0, generator=torch.Generator(), shard=(2, 4))
