"""Monte-Carlo step labels (cohort.reward_training.labels, Math-Shepherd's hard / soft estimates) on tiny real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cohort.assets import BUILTIN_MODELS
from cohort.reward_training.labels import monte_carlo_step_labels, outcome_labels
from cohort.rewards import ExactMatch
from cohort.rewards.process_model import split_steps
from cohort.rollout import SamplingParams

PROMPTS = ["q1:", "q22:", "hello:", "x:", "long prompt:"]
COMPLETIONS = ["ab\ncd\nef", "a1\n\n b2 \n", "", "single", "s1\ns2\ns3\ns4"]
ANSWERS = [0, 1, 0, 1, 1]
N = 4


def params(tokenizer, temperature: float = 1.0, max_new_tokens: int = 6) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, eos_token_ids=(tokenizer.eos_token_id,))


def parity(text: str, answer: int) -> bool:
    """A toy rule that depends on the whole judged text, continuation included."""
    return (sum(map(ord, text)) + answer) % 2 == 0


class Recorder:
    """The parity rule, keeping every text it was asked about (in order)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, text: str, answer: int) -> bool:
        self.texts.append(text)
        return parity(text, answer)


def label(model, tokenizer, rule=parity, seed: int = 0, temperature: float = 1.0, batch: int = 64, **kwargs):
    return monte_carlo_step_labels(
        model, tokenizer, PROMPTS, COMPLETIONS, ANSWERS, rule, rollouts=N, params=params(tokenizer, temperature),
        generator=torch.Generator().manual_seed(seed), max_prefixes_per_batch=batch, **kwargs)


def prefixes() -> list[str]:
    """Every prefix that gets sampled from: each step's end but the completion's last, in order."""
    return [text[:end] for text in COMPLETIONS for _, end in split_steps(text)[:-1]]


def test_labels_have_one_entry_per_step_and_are_consistent(tiny_llama, char_tokenizer):
    result = label(tiny_llama, char_tokenizer)
    for text, answer, item in zip(COMPLETIONS, ANSWERS, result.labels):
        steps = [text[a:b] for a, b in split_steps(text)]
        assert list(item.steps) == steps and len(item.hard) == len(item.soft) == len(item.rollouts) == len(steps)
        for hard, soft in zip(item.hard, item.soft):
            assert hard in (0.0, 1.0) and soft * N == int(soft * N)  # a fraction of N
            assert hard >= soft and (soft > 0) == (hard == 1.0)  # any-of-N vs fraction-of-N
        assert item.correct == parity(text, answer)
        if steps:  # the last step is labelled by the completion's own outcome, with no sampling
            assert item.hard[-1] == item.soft[-1] == float(item.correct) and item.rollouts[-1] == 0
            assert all(r == N for r in item.rollouts[:-1])
    cost = result.cost
    assert (cost.completions, cost.steps, cost.prefixes, cost.rollouts) == (5, 10, 6, 6 * N)
    assert 0 < cost.generated_tokens <= cost.rollouts * 6
    assert cost.per_completion()["rollouts"] == 6 * N / 5 and cost.seconds >= cost.generation_seconds > 0
    soft = [s for item in result.labels for s in item.soft[:-1]]
    assert 0 < sum(soft) < len(soft)  # the toy rule gives both verdicts


def test_soft_labels_are_the_fraction_of_right_continuations(tiny_llama, char_tokenizer):
    """Exact: each prefix's N judged texts start with the prefix exactly as the completion has it,
    and its soft label is the share of them the rule accepts."""
    rule = Recorder()
    result = label(tiny_llama, char_tokenizer, rule, batch=3)
    own, sampled = rule.texts[: len(COMPLETIONS)], rule.texts[len(COMPLETIONS) :]
    assert own == COMPLETIONS
    expected_prefixes = prefixes()
    assert len(sampled) == N * len(expected_prefixes)
    owners = [i for i, text in enumerate(COMPLETIONS) for _ in split_steps(text)[:-1]]
    soft = [s for item in result.labels for s in item.soft[:-1]]
    for j, (prefix, owner) in enumerate(zip(expected_prefixes, owners)):
        texts = sampled[j * N : (j + 1) * N]
        assert all(t.startswith(prefix) for t in texts)
        assert soft[j] == sum(parity(t, ANSWERS[owner]) for t in texts) / N


@pytest.mark.parametrize("batch", [1, 64])
def test_greedy_labels_match_hf_generate_from_each_prefix(tiny_llama, char_tokenizer, batch):
    """With greedy decoding the labels are known in advance: continue each prefix on its own with
    transformers' generate and judge. Batched, left-padded, shared-prefix sampling agrees."""
    result = label(tiny_llama, char_tokenizer, temperature=0.0, batch=batch)
    owners = [i for i, text in enumerate(COMPLETIONS) for _ in split_steps(text)[:-1]]
    expected = []
    for prefix, owner in zip(prefixes(), owners):
        ids = char_tokenizer(PROMPTS[owner])["input_ids"] + char_tokenizer(prefix, add_special_tokens=False)["input_ids"]
        out = tiny_llama.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=6,
                                  do_sample=False, eos_token_id=char_tokenizer.eos_token_id, pad_token_id=char_tokenizer.pad_token_id)
        continuation = char_tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        expected.append(float(parity(prefix + continuation, ANSWERS[owner])))
    assert [h for item in result.labels for h in item.hard[:-1]] == expected
    assert [s for item in result.labels for s in item.soft[:-1]] == expected  # N identical continuations


def test_a_fixed_generator_gives_the_same_labels(tiny_llama, char_tokenizer):
    first, second, other = Recorder(), Recorder(), Recorder()
    a = label(tiny_llama, char_tokenizer, first, seed=11)
    b = label(tiny_llama, char_tokenizer, second, seed=11)
    label(tiny_llama, char_tokenizer, other, seed=12)
    assert a.labels == b.labels and a.cost.generated_tokens == b.cost.generated_tokens
    assert first.texts == second.texts and other.texts != first.texts


def test_a_correctness_reward_and_outcome_labels(tiny_llama, char_tokenizer):
    """A cohort reward with is_correctness works as the rule (sample right when it scores 1)."""
    prompts, completions, answers = ["q:", "r:"], ["a\nb", "c\nd"], ["a\nb", "zz"]
    examples = outcome_labels(prompts, completions, answers, ExactMatch())
    assert [(e.prompt, e.completion, e.label) for e in examples] == [("q:", "a\nb", 1.0), ("r:", "c\nd", 0.0)]
    result = monte_carlo_step_labels(tiny_llama, char_tokenizer, prompts, completions, answers, ExactMatch(), rollouts=2,
                                     params=params(char_tokenizer), generator=torch.Generator().manual_seed(0))
    assert [item.hard[-1] for item in result.labels] == [1.0, 0.0]
    process = result.process_examples(prompts, soft=True)
    assert [e.steps for e in process] == [("a", "b"), ("c", "d")] and process[0].labels == result.labels[0].soft


def test_bad_requests_are_refused(tiny_llama, char_tokenizer):
    with pytest.raises(ValueError, match="give one of each per completion"):
        monte_carlo_step_labels(tiny_llama, char_tokenizer, ["a"], ["b", "c"], [0], parity, rollouts=2,
                                params=params(char_tokenizer), generator=torch.Generator())
    with pytest.raises(ValueError, match="rollouts"):
        monte_carlo_step_labels(tiny_llama, char_tokenizer, ["a"], ["b"], [0], parity, rollouts=0,
                                params=params(char_tokenizer), generator=torch.Generator())


MULTISTEP_MODEL = Path(BUILTIN_MODELS.get("multistep", Path("missing")))


@pytest.mark.slow
@pytest.mark.skipif(not (MULTISTEP_MODEL / "config.json").is_file(), reason="the bundled multi-step model is not built")
def test_monte_carlo_labels_agree_with_the_gold_step_checker():
    """On the bundled multi-step model's own samples, MC hard labels (N=4) against the gold checker.

    MC labels are prefix labels (can the answer still be reached?), so they are compared with the
    gold *prefix* verdict: step k is good when steps 1..k are all right. Prints agreement and cost
    for N=4 and N=8 (run with -s to see them).
    """
    from cohort.data.multistep import check_steps, split_problems
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.models.prompts import encode_prompts
    from cohort.rewards.multistep import FinalAnswerReward
    from cohort.rollout import generate_rollout

    model, tokenizer = load_policy(str(MULTISTEP_MODEL)), load_tokenizer(str(MULTISTEP_MODEL))
    model.requires_grad_(False)
    problems = split_problems("test")[:20]
    prompts, answers = [p["prompt"] for p in problems], [p["answer"] for p in problems]
    sampling = SamplingParams(max_new_tokens=48, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    rollout = generate_rollout(model, encode_prompts(tokenizer, prompts), 1, sampling, pad_token_id=tokenizer.pad_token_id,
                               generator=torch.Generator().manual_seed(0))
    completions = rollout.decode_completions(tokenizer)
    agreement = {}
    for n in (4, 8):
        result = monte_carlo_step_labels(model, tokenizer, prompts, completions, answers, FinalAnswerReward(), rollouts=n,
                                         params=sampling, generator=torch.Generator().manual_seed(1))
        pairs = []
        for prompt, text, item in zip(prompts, completions, result.labels):
            verdicts = check_steps(prompt, text)
            gold_prefix = [float(all(verdicts[: k + 1])) for k in range(len(verdicts))]
            pairs += list(zip(item.hard, gold_prefix))
        agreement[n] = sum(h == g for h, g in pairs) / len(pairs)
        cost = result.cost.per_completion()
        print(f"\nN={n}: {len(pairs)} steps, agreement with gold prefix verdicts {agreement[n]:.3f}, "
              f"{cost['seconds']:.3f} s and {cost['generated_tokens']:.1f} generated tokens per completion, "
              f"{result.cost.rollouts} rollouts in {result.cost.seconds:.2f} s")
    assert agreement[4] >= 0.75 and agreement[8] >= 0.75  # measured 0.885 and 0.934 (100 completions: 0.82-0.86)
