"""cohort.models: finding and loading models and tokenizers, prompt rendering, the scoring forward."""

from __future__ import annotations

import inspect
import shutil
import time

import pytest
import torch
from tiny_models import build_char_tokenizer, save_tiny_model, token_id
from transformers import GenerationConfig

from cohort.models import scoring
from cohort.models.loading import (
    ModelNotFoundError,
    eos_token_ids,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_dtype,
    resolve_model_source,
)
from cohort.models.prompts import encode_prompts, render_prompt
from cohort.models.scoring import (
    cache_kwargs,
    completion_logprobs,
    completion_logprobs_and_entropy,
    left_padded_position_ids,
)
from cohort.rollout import left_pad

MISSING_HUB_ID = "cohort-tests/no-such-model-7f3a9c"


# ----------------------------------------------------------------------------------------------
# Finding and loading
# ----------------------------------------------------------------------------------------------


def test_policy_loads_from_a_local_dir_in_the_requested_dtype(tiny_llama_dir):
    model = load_policy(tiny_llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"

    bf16 = load_policy(str(tiny_llama_dir), dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_reference_is_frozen_and_in_eval_mode(tiny_qwen2_dir):
    reference = load_reference(tiny_qwen2_dir)
    assert type(reference).__name__ == "Qwen2ForCausalLM"
    assert not reference.training
    assert not any(p.requires_grad for p in reference.parameters())


def test_missing_directory_fails_fast_saying_not_found_locally(tmp_path):
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="not found locally") as error:
        load_policy(tmp_path / "no" / "such" / "dir")
    assert time.monotonic() - start < 10
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("loader", [load_policy, load_tokenizer], ids=["model", "tokenizer"])
def test_unknown_hub_id_fails_fast_saying_not_found_locally(loader):
    # Here the Hub is unreachable (fails at once); with network the Hub says the repo does not exist.
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="not found locally") as error:
        loader(MISSING_HUB_ID)
    assert time.monotonic() - start < 10
    assert "HF cache" in str(error.value)


def test_offline_mode_does_not_ask_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_model_source(MISSING_HUB_ID)


def test_hub_id_is_served_from_the_local_hf_cache_without_network(tmp_path, tiny_llama_dir, monkeypatch):
    # Lay the tiny model out exactly as huggingface_hub caches a download.
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--cohort-tests--cached-tiny"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # proves no network is needed

    assert resolve_model_source("cohort-tests/cached-tiny") == str(repo / "snapshots" / commit)
    model = load_policy("cohort-tests/cached-tiny")
    tokenizer = load_tokenizer("cohort-tests/cached-tiny")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.eos_token == "</s>"


def test_directory_without_a_model_gives_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="holds no model: missing config.json") as error:
        load_policy(tmp_path)
    assert "\n" not in str(error.value)

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no model: no weights file"):
        load_reference(tmp_path)
    with pytest.raises(ValueError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)


def test_a_file_path_is_rejected(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_policy(path)


def test_bad_dtype_or_device_is_rejected(tiny_llama_dir):
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        load_policy(tiny_llama_dir, dtype="float8")
    with pytest.raises(ValueError, match="device must be"):
        load_policy(tiny_llama_dir, device="gpu-please")


def test_tokenizer_without_pad_token_falls_back_to_eos(tmp_path):
    directory = save_tiny_model(tmp_path / "nopad", "llama", with_pad=False)
    tokenizer = load_tokenizer(directory)
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_tokenizer_keeps_its_own_pad_token(tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_eos_ids_are_the_union_of_tokenizer_and_generation_config(tmp_path):
    tokenizer = build_char_tokenizer()
    newline, eos = token_id(tokenizer, "\n"), tokenizer.eos_token_id
    directory = save_tiny_model(tmp_path / "multi-eos", "qwen2", generation_eos_ids=[newline, eos])
    model = load_policy(directory)
    assert eos_token_ids(load_tokenizer(directory), model.generation_config) == tuple(sorted({eos, newline}))
    assert eos_token_ids(tokenizer) == (eos,)
    assert eos_token_ids(tokenizer, GenerationConfig(eos_token_id=7)) == tuple(sorted({eos, 7}))


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def test_plain_prompt_is_used_as_is_and_gets_bos(char_tokenizer):
    assert render_prompt(char_tokenizer, "2+2=") == "2+2="
    (ids,) = encode_prompts(char_tokenizer, ["2+2="])
    assert ids == [char_tokenizer.bos_token_id] + [token_id(char_tokenizer, c) for c in "2+2="]


def test_chat_prompts_go_through_the_chat_template(char_tokenizer):
    wrapped = render_prompt(char_tokenizer, "hi", chat=True)
    messages = render_prompt(char_tokenizer, [{"role": "user", "content": "hi"}])
    assert wrapped == messages == "<s><|user|>hi</s><|assistant|>"
    (ids,) = encode_prompts(char_tokenizer, ["hi"], chat=True)
    assert ids.count(char_tokenizer.bos_token_id) == 1  # the template's BOS only, none added on top
    assert ids[-1] == token_id(char_tokenizer, "<|assistant|>")


def test_chat_without_a_template_is_a_clear_error():
    tokenizer = build_char_tokenizer(chat_template=None)
    assert render_prompt(tokenizer, "hi") == "hi"
    with pytest.raises(ValueError, match="has no chat template"):
        render_prompt(tokenizer, "hi", chat=True)
    with pytest.raises(ValueError, match="prompt 1: .*no chat template"):
        encode_prompts(tokenizer, ["ok", [{"role": "user", "content": "hi"}]])


def test_malformed_messages_are_rejected(char_tokenizer):
    with pytest.raises(ValueError, match="message 0 must be a dict"):
        render_prompt(char_tokenizer, [{"role": "user"}])
    with pytest.raises(ValueError, match="empty"):
        render_prompt(char_tokenizer, [])
    with pytest.raises(ValueError, match="expected a string or a list of messages"):
        render_prompt(char_tokenizer, 42)


# ----------------------------------------------------------------------------------------------
# The scoring forward
# ----------------------------------------------------------------------------------------------


def _batch(tokenizer, prompts, completions):
    """Left-padded prompts and right-padded completions (pad positions hold garbage ids)."""
    prompt_ids, prompt_mask = left_pad([tokenizer(p)["input_ids"] for p in prompts], tokenizer.pad_token_id)
    rows = [[token_id(tokenizer, c) for c in text] for text in completions]
    width = max(len(r) for r in rows)
    completion_ids = torch.full((len(rows), width), -100, dtype=torch.long)  # out-of-vocab garbage on padding
    for i, row in enumerate(rows):
        completion_ids[i, : len(row)] = torch.tensor(row)
    completion_mask = completion_ids != -100
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def _reference_logprobs(model, tokenizer, prompt, completion, temperature):
    """Log-probs and entropies of one unpadded sequence, the slow obvious way."""
    ids = tokenizer(prompt)["input_ids"] + [token_id(tokenizer, c) for c in completion]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float() / temperature  # [L, V]
    log_p = torch.log_softmax(logits[len(ids) - len(completion) - 1 : -1], dim=-1)  # [T, V]
    targets = torch.tensor(ids[len(ids) - len(completion) :])
    return log_p.gather(-1, targets[:, None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


PROMPTS = ["what is 12+30?", "hi", "a longer prompt here"]
COMPLETIONS = ["42\n", "hello there", "x"]


def test_completion_logprobs_match_unpadded_forward(tiny_model, char_tokenizer):
    batch = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    logprobs, entropy = completion_logprobs_and_entropy(tiny_model, *batch, temperature=0.7)
    plain = completion_logprobs(tiny_model, *batch, temperature=0.7)
    assert logprobs.dtype == entropy.dtype == torch.float32
    assert logprobs.shape == entropy.shape == batch[2].shape
    torch.testing.assert_close(plain, logprobs)
    for row, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        expected_logprobs, expected_entropy = _reference_logprobs(tiny_model, char_tokenizer, prompt, completion, 0.7)
        torch.testing.assert_close(logprobs[row, : len(completion)], expected_logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(entropy[row, : len(completion)], expected_entropy, atol=1e-5, rtol=0)


def test_gradients_flow_and_padding_gets_none(tiny_llama, char_tokenizer):
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    logprobs, entropy = completion_logprobs_and_entropy(
        tiny_llama, prompt_ids, prompt_mask, completion_ids, completion_mask
    )
    assert logprobs.requires_grad and not entropy.requires_grad
    torch.where(completion_mask, logprobs, 0.0).sum().backward()
    grads = [p.grad for p in tiny_llama.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert tiny_llama.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_scoring_runs_without_autograd(tiny_llama, char_tokenizer, context):
    batch = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    with context():
        logprobs = completion_logprobs(tiny_llama, *batch)
    assert not logprobs.requires_grad
    expected, _ = _reference_logprobs(tiny_llama, char_tokenizer, PROMPTS[1], COMPLETIONS[1], 1.0)
    torch.testing.assert_close(logprobs[1, : len(COMPLETIONS[1])], expected, atol=1e-5, rtol=0)


def test_the_head_runs_on_chunks_of_the_needed_positions_only(tiny_llama, char_tokenizer):
    """No [n, T, vocab] logits tensor: the output head sees chunks of the rows x T completion positions."""
    batch = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    completion_logprobs(tiny_llama, *batch)  # the one-time check that the head is plain for this class
    seen = []
    tiny_llama.lm_head.register_forward_hook(lambda module, args, output: seen.append(tuple(output.shape)))
    completion_logprobs(tiny_llama, *batch)
    rows, width = batch[2].shape
    assert all(len(shape) == 2 and shape[1] == tiny_llama.config.vocab_size for shape in seen)
    assert sum(shape[0] for shape in seen) == rows * width


@pytest.mark.parametrize("recompute_above", [0, 1 << 40], ids=["recomputed", "kept"])
def test_chunked_head_gradients_equal_the_full_logits_gradients(tiny_model, char_tokenizer, monkeypatch, recompute_above):
    """Log-probs and every parameter's gradient through the chunked head (recomputed in the backward
    or kept) equal those of a plain full forward + log_softmax, one unpadded sequence at a time, to 1e-5."""
    monkeypatch.setattr(scoring, "RECOMPUTE_ABOVE_LOGITS", recompute_above)
    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    batch = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    weights = torch.linspace(0.5, 1.5, batch[2].numel()).reshape(batch[2].shape)  # any fixed per-token weights
    logprobs = completion_logprobs(tiny_model, *batch, temperature=0.8, chunk_rows=5)
    torch.where(batch[3], logprobs * weights, 0.0).sum().backward()
    assert bool(calls) == (recompute_above == 0)
    chunked = {name: p.grad.clone() for name, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    total = 0.0
    for row, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        ids = char_tokenizer(prompt)["input_ids"] + [token_id(char_tokenizer, c) for c in completion]
        logits = tiny_model(torch.tensor([ids])).logits[0].float() / 0.8  # [L, V]
        log_p = torch.log_softmax(logits[len(ids) - len(completion) - 1 : -1], dim=-1)  # [T, V]
        picked = log_p.gather(-1, torch.tensor(ids[len(ids) - len(completion):])[:, None]).squeeze(-1)  # [T]
        torch.testing.assert_close(logprobs[row, : len(completion)].detach(), picked.detach(), atol=1e-5, rtol=0)
        total = total + (picked * weights[row, : len(completion)]).sum()
    total.backward()
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(chunked[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_kv_cache_goes_under_the_name_the_forward_takes(tiny_llama):
    """`cache` where the forward has it (transformers 5.24 deprecates `past_key_values`), else the old name."""

    class NewApi(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None): ...

    class OldApi(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    sentinel = object()
    assert cache_kwargs(NewApi(), sentinel) == {"cache": sentinel}
    assert cache_kwargs(OldApi(), sentinel) == {"past_key_values": sentinel}
    expected = "cache" if "cache" in inspect.signature(type(tiny_llama).forward).parameters else "past_key_values"
    assert list(cache_kwargs(tiny_llama, sentinel)) == [expected]


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    assert left_padded_position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_scoring_rejects_malformed_batches(tiny_llama, char_tokenizer):
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch(char_tokenizer, PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="completion_mask must be a bool tensor"):
        completion_logprobs(tiny_llama, prompt_ids, prompt_mask, completion_ids, completion_mask.long())
    with pytest.raises(ValueError, match="rows"):
        completion_logprobs(tiny_llama, prompt_ids, prompt_mask, completion_ids[:2], completion_mask[:2])
    with pytest.raises(ValueError, match="left-padded"):
        completion_logprobs(tiny_llama, prompt_ids.flip(1), prompt_mask.flip(1), completion_ids, completion_mask)
    with pytest.raises(ValueError, match="differs"):
        completion_logprobs(tiny_llama, prompt_ids, prompt_mask[:, 1:], completion_ids, completion_mask)
