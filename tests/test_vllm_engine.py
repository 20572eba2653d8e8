"""vLLM as the rollout engine (rollout.engine=vllm), on vLLM's CPU build: its weights follow the
policy (greedy output equals the trainer's own after updates, LoRA merged), the native engine's
sampling contract, log-probs that agree with the trainer's forward, Monte-Carlo step labels as
the native engine's. These tests run where vLLM is installed (.venv-vllm: make vllm; make test
runs them there) and skip elsewhere. From the command line: tests/test_vllm_training.py.

The models have attention heads of 32 (vLLM's CPU attention has no kernel for smaller heads):
the bundled demo model (Llama, tied output head) and a tiny random Qwen2 (grouped KV heads,
untied output head).
"""

from __future__ import annotations

import pytest
import torch

from cohort.assets import resolve_builtin
from cohort.rollout import SamplingParams
from cohort.rollout.engines import NATIVE
from cohort.rollout.vllm_engine import INSTALL_HINT, VllmEngine, vllm_available

pytestmark = pytest.mark.vllm
if not vllm_available():
    pytest.skip(f"{INSTALL_HINT} (make test runs these tests there)", allow_module_level=True)

ENGINE_OPTIONS = {"dtype": torch.float32, "device": torch.device("cpu"), "memory_fraction": 0.02, "sleep": True,
                  "trust_remote_code": False}
PROMPTS = ["12+34=", "7+8=", "99-45=", "50+50=", "3-1=", "81+9=", "64-32=", "5+77="]


@pytest.fixture(scope="module")
def demo_dir():
    return resolve_builtin("builtin:demo")


@pytest.fixture
def engine(demo_dir):
    """The process's engine for the demo model (started once; restarted if a test started another)."""
    return VllmEngine.shared(str(demo_dir), **ENGINE_OPTIONS)


def load(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(directory)


def encode(tokenizer, prompts):
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def greedy(engine, model, tokenizer, prompts=PROMPTS, max_new_tokens=6):
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, eos_token_ids=(tokenizer.eos_token_id,))
    rollout = engine.generate(model, encode(tokenizer, prompts), 1, params, pad_token_id=tokenizer.pad_token_id,
                              generator=torch.Generator().manual_seed(0), tokenizer=tokenizer)
    return rollout.completion_token_lists(), rollout.finish_reasons


def perturb(model, steps=3, lr=3e-2, seed=0):
    """A few real AdamW steps on random next-token targets: every weight moves, in place."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # as the trainer: no version-counter bumps
    vocab = model.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(3, vocab, (8, 10), generator=g)
        loss = model(input_ids=ids, labels=torch.randint(3, vocab, (8, 10), generator=g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_greedy_equals_the_trainers_own_after_every_update(engine, demo_dir):
    policy, tokenizer = load(demo_dir)
    before = greedy(engine, policy, tokenizer)
    assert before == greedy(NATIVE, policy, tokenizer)
    assert engine.follow(policy) is False  # unchanged weights are not copied again
    changed = False
    for round_ in range(2):
        perturb(policy, seed=round_)
        assert engine.follow(policy) is True
        engine._copied = None  # copy once more through generate (follow() above already did)
        after = greedy(engine, policy, tokenizer)
        assert after == greedy(NATIVE, policy, tokenizer)
        changed |= after != before
    assert changed, "the updates changed no greedy completion: this test would not catch stale weights"


def test_lora_adapters_are_merged_for_generation(engine, demo_dir):
    from cohort.models.lora import add_adapters

    base, tokenizer = load(demo_dir)
    policy = add_adapters(base, {"r": 4, "alpha": 16})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=g))
    plain, _ = load(demo_dir)
    assert greedy(engine, policy, tokenizer) == greedy(NATIVE, policy, tokenizer)
    assert greedy(engine, policy, tokenizer) != greedy(engine, plain, tokenizer)


def sampled(engine, model, tokenizer, *, seed, group_size=4, **params):
    settings = {"max_new_tokens": 6, "temperature": 1.0, "eos_token_ids": (tokenizer.eos_token_id,)} | params
    return engine.generate(model, encode(tokenizer, PROMPTS), group_size, SamplingParams(**settings),
                           pad_token_id=tokenizer.pad_token_id, generator=torch.Generator().manual_seed(seed),
                           tokenizer=tokenizer)


def test_the_sampling_contract_is_the_native_engines(engine, demo_dir):
    policy, tokenizer = load(demo_dir)
    eos = tokenizer.eos_token_id
    rollout = sampled(engine, policy, tokenizer, seed=5)
    assert rollout.num_completions == len(PROMPTS) * 4 and not rollout.sampled_by_policy
    assert rollout.logprob_temperature == 1.0
    for tokens, reason in zip(rollout.completion_token_lists(), rollout.finish_reasons):
        assert (reason == "eos") == (tokens[-1] == eos) and eos not in tokens[:-1]
        assert reason == "eos" or len(tokens) == 6
    assert "eos" in rollout.finish_reasons
    again, other = sampled(engine, policy, tokenizer, seed=5), sampled(engine, policy, tokenizer, seed=6)
    assert torch.equal(again.completion_ids, rollout.completion_ids)  # the run's generator decides the samples
    assert not torch.equal(other.completion_ids, rollout.completion_ids)
    groups = rollout.completion_token_lists()
    assert any(len({tuple(t) for t in groups[i * 4:(i + 1) * 4]}) > 1 for i in range(len(PROMPTS)))  # G distinct draws

    short = sampled(engine, policy, tokenizer, seed=5, max_new_tokens=1)
    assert all(r in ("eos", "length") for r in short.finish_reasons) and short.completion_ids.shape[1] == 1
    stopped = sampled(engine, policy, tokenizer, seed=5, stop_strings=("1",))
    for text, reason in zip(stopped.decode_completions(tokenizer), stopped.finish_reasons):
        assert ("1" in text) == (reason == "stop")
        assert reason != "stop" or (text.endswith("1") and text.count("1") == 1)  # ends at the completing token


def trainer_logprobs(model, rollout, temperature):
    from cohort.models.scoring import completion_logprobs_and_entropy

    prompts, prompt_mask = rollout.expanded_prompts()
    with torch.no_grad():
        logprobs, _ = completion_logprobs_and_entropy(model, prompts, prompt_mask, rollout.completion_ids,
                                                      rollout.completion_mask, temperature=temperature)
    return logprobs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_agree_with_the_trainers_forward(engine, demo_dir, temperature):
    policy, tokenizer = load(demo_dir)
    rollout = sampled(engine, policy, tokenizer, seed=2, temperature=temperature)
    gap = (trainer_logprobs(policy, rollout, temperature) - rollout.sampling_logprobs).abs()[rollout.completion_mask]
    assert float(gap.mean()) < 1e-5 and float(gap.max()) < 1e-3, (float(gap.mean()), float(gap.max()))


def test_a_request_beyond_the_models_positions_fails_as_under_the_native_engine(engine, demo_dir):
    policy, tokenizer = load(demo_dir)
    too_long = SamplingParams(max_new_tokens=60, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))  # 64 positions
    for each in (NATIVE, engine):
        with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
            each.generate(policy, encode(tokenizer, PROMPTS), 2, too_long, pad_token_id=tokenizer.pad_token_id,
                          generator=torch.Generator().manual_seed(0), tokenizer=tokenizer)



def test_monte_carlo_step_labels_from_vllm_equal_the_native_engines_when_greedy(tmp_path):
    """Math-Shepherd labels from continuations of each step's prefix (a tiny random Qwen2 with
    grouped KV heads and an untied output head): under greedy decoding both engines continue alike."""
    from tiny_models import save_tiny_model

    from cohort.reward_training.labels import monte_carlo_step_labels

    directory = save_tiny_model(tmp_path / "qwen2", "qwen2", seed=3, hidden_size=128)  # heads of 32
    model, tokenizer = load(directory)
    prompts, completions, answers = ["q1:", "q22:", "x:"], ["ab\ncd\nef", "a1\n\n b2 \n", "s1\ns2\ns3"], [0, 1, 1]
    params = SamplingParams(max_new_tokens=6, temperature=0.0, eos_token_ids=(tokenizer.eos_token_id,))

    def parity(text, answer):
        return (sum(map(ord, text)) + answer) % 2 == 0

    engine = VllmEngine.shared(str(directory), **ENGINE_OPTIONS)
    labels = [monte_carlo_step_labels(model, tokenizer, prompts, completions, answers, parity, rollouts=2, params=params,
                                      generator=torch.Generator().manual_seed(0), engine=e).labels for e in (NATIVE, engine)]
    assert [item.hard for item in labels[0]] == [item.hard for item in labels[1]]
    assert [item.soft for item in labels[0]] == [item.soft for item in labels[1]]
