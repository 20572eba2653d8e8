"""The block-growing KV cache: the same keys, values and samples as transformers' DynamicLayer."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

import cohort.rollout.engine as engine
from cohort.rollout import SamplingParams, generate_rollout
from cohort.rollout.kv_cache import BlockGrowingLayer, grow_in_blocks


def test_writes_in_place_grow_by_blocks_and_equal_concatenation():
    torch.manual_seed(0)
    first = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)  # [B, H, L, D]
    plain = DynamicLayer()
    plain.update(*first)
    grown = BlockGrowingLayer(*first, block=3)
    buffers = []
    for step in range(8):
        new = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        expected, got = plain.update(*new), grown.update(*new)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
        assert grown.get_seq_length() == plain.get_seq_length() == 6 + step
        buffers.append(grown._keys.data_ptr())
    assert len(set(buffers)) == 3  # 8 tokens in blocks of 3: two reallocations, not one per token
    keep = torch.tensor([2, 0])
    plain.batch_select_indices(keep), grown.batch_select_indices(keep)
    plain.batch_repeat_interleave(2), grown.batch_repeat_interleave(2)
    assert torch.equal(plain.keys, grown.keys) and torch.equal(plain.values, grown.values)
    new = torch.randn(4, 2, 2, 4), torch.randn(4, 2, 2, 4)
    assert all(torch.equal(a, b) for a, b in zip(plain.update(*new), grown.update(*new)))
    plain.crop(-3), grown.crop(-3)
    assert torch.equal(plain.keys, grown.keys) and grown.get_seq_length() == plain.get_seq_length()


def test_only_filled_plain_layers_are_converted():
    cache = DynamicCache()
    cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), 0)
    cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), 1)
    assert grow_in_blocks(cache) == 2 and all(isinstance(layer, BlockGrowingLayer) for layer in cache.layers)
    assert grow_in_blocks(cache) == 0  # already converted
    assert grow_in_blocks(object()) == 0  # not a layered cache: left alone


@pytest.mark.parametrize("compact_fraction", [0.0, 0.25])
def test_rollouts_equal_the_concatenating_cache(tiny_model, char_tokenizer, monkeypatch, compact_fraction):
    monkeypatch.setattr(engine, "COMPACT_FRACTION", compact_fraction)
    prompts = [char_tokenizer(text)["input_ids"] for text in ["what is 12+30?", "hi", "count: 1, 2, 3,"]]
    eos = tuple(char_tokenizer(" e")["input_ids"][-1:])
    rollouts = []
    for grow in (False, True):
        monkeypatch.setattr(engine, "GROW_IN_BLOCKS", grow)
        params = SamplingParams(max_new_tokens=150, temperature=1.0, eos_token_ids=eos)  # > 2 blocks of 64
        rollouts.append(generate_rollout(tiny_model, prompts, 4, params, pad_token_id=char_tokenizer.pad_token_id,
                                         generator=torch.Generator().manual_seed(3)))
    plain, grown = rollouts
    assert len(set(plain.completion_lengths.tolist())) > 1  # rows end at different steps
    assert torch.equal(plain.completion_ids, grown.completion_ids)
    torch.testing.assert_close(plain.sampling_logprobs, grown.sampling_logprobs, atol=1e-6, rtol=0)


def test_beam_reorder_reset_and_offload_keep_buffer_and_views_in_step():
    torch.manual_seed(1)
    first = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    plain, grown = DynamicLayer(), BlockGrowingLayer(*first, block=2)
    plain.update(*first)
    beams = torch.tensor([2, 2, 0])
    plain.reorder_cache(beams), grown.reorder_cache(beams)
    grown.offload(), grown.prefetch()
    new = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
    assert all(torch.equal(a, b) for a, b in zip(plain.update(*new), grown.update(*new)))
    plain.reset(), grown.reset()
    again = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    assert all(torch.equal(a, b) for a, b in zip(plain.update(*again), grown.update(*again)))
    assert grown.get_seq_length() == 2


def test_an_offloading_cache_is_left_alone():
    cache = DynamicCache()
    cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), 0)
    cache.offloading = True  # what DynamicCache(offloading=True) sets (it needs a GPU to update)
    assert grow_in_blocks(cache) == 0 and type(cache.layers[0]) is DynamicLayer
