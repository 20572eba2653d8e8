"""Every method of the one loop, end to end on a tiny real model: metrics, exact resume (PPO's value
model included), micro-batch invariance, groups and pairs kept whole, and bad input caught early."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_trainer import comparable, metric_lines, one_update
from transformers import AutoModelForTokenClassification

from cohort.cli import main
from cohort.config import ConfigError, load_config
from cohort.data.files import DatasetError
from cohort.methods import METHODS as REGISTERED
from cohort.monitoring.console import RunConsole
from cohort.optimisation.batching import (
    micro_batches,
    mini_batches,
    rollout_micro_batches,
)
from cohort.rollout import Rollout
from cohort.sources import MethodDataError
from cohort.training.trainer import Trainer

METHODS = REGISTERED.names()  # every registered method, so a new one is tested without naming it here

METHOD_METRICS = {
    "grpo": {"kl", "clip_frac/low", "clip_frac/high", "frac_zero_std", "advantage/abs_mean", "reward/mean"},
    "ppo": {"value/loss", "value/explained_variance", "value/clip_frac", "kl_in_reward", "returns/mean", "value/grad_norm"},
    "dpo": {"dpo/reward_chosen", "dpo/reward_rejected", "dpo/margin", "dpo/accuracy", "dpo/dataset_pairs"},
    "sft": {"nll", "sft/dataset_size"},
    "rft": {"nll", "rft/dataset_size", "rft/kept_frac"},
    "online_rft": {"nll", "rft/kept_frac", "reward/mean"},
}
SHARED_METRICS = {"step", "loss", "grad_norm", "lr", "entropy", "completion_len/mean", "trained_frac", "time/step_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """'a+b=' prompts with their sums, plus chosen/rejected completions for preference DPO."""
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "chosen": str(a + b), "rejected": str(a + b + 1)}
            for a in range(6) for b in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def draws_offline(method, overrides=()):
    """Whether the method samples the initial policy once (RFT, pair methods without a preference file)."""
    return REGISTERED.get(method).samples == "offline" and "dpo.pairs=dataset" not in overrides


def has_kl(method):
    """Whether the method reads algorithm.beta (a reference model in its loss or reward)."""
    return REGISTERED.get(method).reads_key("algorithm.beta")


def recorded_metrics(method):
    """What a run of ``method`` must record: the metrics listed above, and every metric its panels draw."""
    drawn = {key for panel in REGISTERED.get(method).panels for key, _ in panel.series}
    return SHARED_METRICS | METHOD_METRICS.get(method, set()) | drawn


def method_config(out_dir, model_dir, task_file, method, *overrides):
    base = [
        f"model.path={model_dir}", f"data.task={task_file}", "data.test_fraction=0.25", "data.eval_limit=4",
        f"algorithm.method={method}", "rollout.group_size=4", "rollout.prompts_per_step=3", "rollout.max_new_tokens=4",
        "optim.lr=1e-3", "optim.micro_batch_size=5", "train.steps=3", "train.save_every=2", "train.eval_samples=2",
        f"train.out_dir={out_dir}", "log.console=quiet", "log.completions_every=1", "log.report=false",
        "reward.functions=[{name: 'reward_fixtures:has_digit'}, {name: 'reward_fixtures:digit_count', weight: 0.1}]",
    ]
    if draws_offline(method, overrides):
        base += ["offline.samples_per_prompt=4", "offline.max_prompts=12"]
    return load_config(None, base + list(overrides))


def train(config):
    return Trainer(config, RunConsole("quiet", config.train.steps)).train()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_records_its_metrics(tmp_path, tiny_llama_dir, task_file, method):
    out = tmp_path / method
    summary = train(method_config(out, tiny_llama_dir, task_file, method))
    assert summary["steps"] == 3 and "after" in summary
    metrics = metric_lines(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert recorded_metrics(method) <= set(m), recorded_metrics(method) - set(m)
        assert m["loss"] is not None and m["grad_norm"] is not None
    trained = load_file(out / "final" / "model.safetensors")
    initial = load_file(tiny_llama_dir / "model.safetensors")
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), f"{method} changed no weight"
    if method == "ppo":
        value = AutoModelForTokenClassification.from_pretrained(out / "checkpoints" / "step-3" / "value_model")
        assert value.config.num_labels == 1
    if draws_offline(method):
        drawn = (out / "offline" / "samples.jsonl").read_text().splitlines()
        assert len(drawn) == 12 * 4  # K samples for each of the max_prompts prompts


@pytest.mark.parametrize("method", METHODS)
def test_resume_equals_the_straight_run_for_every_method(tmp_path, tiny_llama_dir, task_file, method):
    extra = ("train.steps=4", "train.save_every=2", "train.eval_before=false", "train.eval_after=false")
    if has_kl(method):
        extra += ("algorithm.beta=0.04", "algorithm.mu=2")
    straight = tmp_path / "straight"
    train(method_config(straight, tiny_llama_dir, task_file, method, *extra))
    split = tmp_path / "split"
    train(method_config(split, tiny_llama_dir, task_file, method, *extra, "train.steps=2"))
    train(method_config(split, tiny_llama_dir, task_file, method, *extra, "train.resume=true"))
    assert comparable(metric_lines(split)) == comparable(metric_lines(straight))
    for part in ["final/model.safetensors"] + (["checkpoints/step-4/value_model/model.safetensors"] if method == "ppo" else []):
        a, b = load_file(straight / part), load_file(split / part)
        assert all(torch.equal(a[k], b[k]) for k in a), part


@pytest.mark.parametrize("method", METHODS)
def test_micro_batch_size_does_not_change_any_methods_gradient(tmp_path, tiny_llama_dir, task_file, method):
    """One row per micro-batch, 64 rows, or a padded-token budget that cuts the batch by length: one gradient."""
    gradients = []
    for size, tokens in ((1, 0), (64, 0), (64, 24)):
        extra = [f"optim.micro_batch_size={size}", f"optim.micro_batch_tokens={tokens}", "optim.lr=1e-12"]
        if has_kl(method):
            extra += ["algorithm.beta=0.04", "algorithm.aggregation=token_mean"]
        trainer = Trainer(method_config(tmp_path / f"micro{size}-{tokens}", tiny_llama_dir, task_file, method, *extra), RunConsole("quiet", 1))
        signal = one_update(trainer)
        assert signal.trainable.any()
        modules = {t.name: t.module for t in trainer.trainables}
        gradients.append({f"{m}.{n}": p.grad.clone() for m, module in modules.items() for n, p in module.named_parameters() if p.grad is not None})
    for other in gradients[1:]:
        assert gradients[0].keys() == other.keys()
        for name, grad in gradients[0].items():
            assert torch.allclose(grad, other[name], rtol=1e-4, atol=1e-7), name


@settings(max_examples=100, deadline=None)
@given(
    group_size=st.integers(1, 4),
    groups=st.integers(1, 6),
    size=st.integers(1, 9),
    minis=st.integers(1, 4),
    data=st.data(),
)
def test_micro_and_mini_batches_never_split_a_group(group_size, groups, size, minis, data):
    rows = groups * group_size
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, 9), min_size=rows, max_size=rows)))
    prompt_lengths = torch.tensor(data.draw(st.lists(st.integers(1, 5), min_size=groups, max_size=groups))).repeat_interleave(group_size)
    for mini in mini_batches(rows, minis, group_size, "group"):
        assert {r // group_size for r in mini} == {r // group_size for r in mini if True}
        assert all(sum(1 for r in mini if r // group_size == g) == group_size for g in {r // group_size for r in mini})
        kept = data.draw(st.lists(st.sampled_from(mini), unique=True)) if data.draw(st.booleans()) else mini
        budget = data.draw(st.sampled_from([0, 1, 8, 20, 60]))
        micros = micro_batches(sorted(kept), lengths, size, group_size, "group", budget, prompt_lengths)
        assert sorted(r for m in micros for r in m) == sorted(kept)
        owner = {}
        for index, micro in enumerate(micros):
            for r in micro:
                assert owner.setdefault(r // group_size, index) == index  # a group lives in one micro-batch
            padded = len(micro) * (max(int(prompt_lengths[r]) for r in micro) + max(int(lengths[r]) for r in micro))
            one_group = len({r // group_size for r in micro}) == 1
            assert one_group or (len(micro) <= size and (budget == 0 or padded <= budget))
    assert sorted(r for mini in mini_batches(rows, minis, group_size, "group") for r in mini) == list(range(rows))


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30), size=st.integers(1, 12),
       budget=st.sampled_from([0, 1, 16, 64, 200]), prompt=st.integers(1, 8))
def test_a_token_budget_cuts_rows_by_length_and_keeps_every_row(lengths, size, budget, prompt):
    completion = torch.tensor(lengths)
    micros = micro_batches(list(range(len(lengths))), completion, size, 1, "row", budget, torch.full((len(lengths),), prompt))
    assert sorted(r for m in micros for r in m) == list(range(len(lengths)))
    order = [lengths[r] for m in micros for r in m]
    assert order == sorted(order)  # shortest first: each micro-batch pads only up to its own longest row
    for micro in micros:
        assert len(micro) <= size
        assert len(micro) == 1 or budget == 0 or len(micro) * (prompt + max(lengths[r] for r in micro)) <= budget
    if budget == 0:
        assert [len(m) for m in micros[:-1]] == [size] * (len(micros) - 1)  # rows only: full micro-batches


def _rollout_with(prompt_width: int, lengths: list[list[int]]) -> Rollout:
    """A rollout of len(lengths) groups whose prompts are ``prompt_width`` tokens and completions these lengths."""
    groups, group_size = len(lengths), len(lengths[0])
    width = max(max(row) for row in lengths)
    completion_mask = torch.arange(width)[None] < torch.tensor(lengths).reshape(-1, 1)  # [N, T]
    return Rollout(
        prompt_ids=torch.arange(groups * prompt_width).reshape(groups, prompt_width) % 7 + 3,
        prompt_mask=torch.ones(groups, prompt_width, dtype=torch.bool), group_size=group_size,
        completion_ids=torch.full((groups * group_size, width), 5), completion_mask=completion_mask,
        sampling_logprobs=torch.zeros(groups * group_size, width), finish_reasons=["eos"] * (groups * group_size),
        logprob_temperature=1.0, pad_token_id=0,
    )


def test_rows_are_cut_across_groups_unless_whole_groups_run_fewer_positions():
    spread = [[4, 60, 9, 120], [5, 110, 7, 64], [3, 100, 8, 58]]  # each group has short and long completions
    short_prompts = rollout_micro_batches(_rollout_with(4, spread), list(range(12)), 4, token_budget=300)
    assert any(len({r // 4 for r in micro}) > 1 for micro in short_prompts)  # sorted by length across groups
    long_prompts = rollout_micro_batches(_rollout_with(400, spread), list(range(12)), 4, token_budget=300)
    assert all(len({r // 4 for r in micro}) == 1 for micro in long_prompts)  # each prompt runs once for its group
    for plan in (short_prompts, long_prompts):
        assert sorted(r for micro in plan for r in micro) == list(range(12))


def test_dpo_pairs_from_a_preference_file(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "pref"
    train(method_config(out, tiny_llama_dir, task_file, "dpo", "dpo.pairs=dataset", "train.batch_size=4", "train.steps=2",
                        "train.eval_before=false", "train.eval_after=false"))
    metrics = metric_lines(out)
    assert metrics[0]["dpo/dataset_pairs"] == 27 and metrics[0]["dpo/accuracy"] is not None
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert completions[0]["group"] == completions[1]["group"]  # chosen, then rejected, of one prompt
    assert int(completions[1]["completion"]) == int(completions[0]["completion"]) + 1
    assert not (out / "offline").exists()


def test_offline_samples_are_reproducible_and_reused(tmp_path, tiny_llama_dir, task_file):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        trainer = Trainer(method_config(out, tiny_llama_dir, task_file, "rft", "train.steps=1"), RunConsole("quiet", 1))
        trainer.source.prepare()
    assert (first / "offline" / "samples.jsonl").read_text() == (second / "offline" / "samples.jsonl").read_text()
    with pytest.raises(MethodDataError, match="offline samples drawn with other settings \\(samples_per_prompt\\)"):
        Trainer(method_config(first, tiny_llama_dir, task_file, "rft", "offline.samples_per_prompt=3", "train.overwrite=false",
                              "train.resume=true"), RunConsole("quiet", 1)).source.prepare()


def test_an_interrupted_offline_draw_continues_to_the_same_samples(tmp_path, tiny_llama_dir, task_file):
    straight = Trainer(method_config(tmp_path / "straight", tiny_llama_dir, task_file, "rft"), RunConsole("quiet", 1))
    straight.source.prepare()
    cut = Trainer(method_config(tmp_path / "cut", tiny_llama_dir, task_file, "rft"), RunConsole("quiet", 1))
    store = cut.source.store
    store.directory.mkdir(parents=True)
    store._draw_chunk(0, store.prompt_indices[: store.chunk_size], store.directory / "samples.jsonl")
    with (store.directory / "samples.jsonl").open("a") as handle:
        handle.write('{"chunk": 1, "prompt_index": 0, "completion_ids": [1]')  # a chunk cut mid-line by a crash
    resumed = Trainer(method_config(tmp_path / "cut", tiny_llama_dir, task_file, "rft", "train.resume=true"), RunConsole("quiet", 1))
    resumed.source.prepare()
    assert (tmp_path / "cut" / "offline" / "samples.jsonl").read_text() == (tmp_path / "straight" / "offline" / "samples.jsonl").read_text()


@pytest.mark.parametrize(
    "method, overrides, error, message",
    [
        ("sft", ["sft.target_column=solution"], DatasetError, "sft.target_column='solution': the training rows have no such column"),
        ("dpo", ["dpo.pairs=dataset", "dpo.chosen_column=best"], DatasetError, "dpo.pairs=dataset needs a column 'best'"),
        ("dpo", ["reward.functions=[{name: 'reward_fixtures:digit_count'}]"], MethodDataError,
         "method dpo \\(dpo.pairs=samples\\) keeps correct samples, but no reward function measures correctness"),
        ("rft", ["reward.functions=[{name: 'reward_fixtures:length_score'}]"], MethodDataError, "method rft keeps correct samples"),
        ("online_rft", ["reward.functions=[{name: 'reward_fixtures:length_score'}]"], MethodDataError, "method online_rft keeps"),
        ("sft", ["algorithm.beta=0.1"], ConfigError, "algorithm.beta belongs to method grpo / ppo, not sft"),
        ("ppo", ["dpo.beta=0.2"], ConfigError, "dpo.beta belongs to method dpo / ipo, not ppo"),
    ],
)
def test_a_method_without_what_it_needs_fails_before_any_model_loads(tmp_path, task_file, method, overrides, error, message):
    config = method_config(tmp_path / "run", "/nonexistent/model", task_file, method, *overrides)
    with pytest.raises(error, match=message):
        Trainer(config, RunConsole("quiet", 1))  # the model path does not exist: nothing was loaded


def test_rft_with_no_correct_sample_says_so_in_one_line(tmp_path, tiny_llama_dir, task_file, capsys):
    args = ["train", f"model.path={tiny_llama_dir}", f"data.task={task_file}", "algorithm.method=rft", "offline.max_prompts=3", "rollout.max_new_tokens=4",
            f"train.out_dir={tmp_path / 'r'}", "log.console=quiet", "reward.functions=[{name: 'reward_fixtures:never_correct'}]",
            "train.eval_before=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cohort: error: rft: none of the") and "\n" not in err


def test_sft_with_an_empty_target_names_the_row(tmp_path, tiny_llama_dir):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "1+1=", "answer": "2", "target": "2"}\n{"prompt": "2+2=", "answer": "4", "target": " "}\n')
    config = load_config(None, [f"model.path={tiny_llama_dir}", f"data.task={path}", "algorithm.method=sft", f"train.out_dir={tmp_path / 'o'}"])
    with pytest.raises(DatasetError, match="row 2, column 'target': method sft needs a non-empty target"):
        Trainer(config, RunConsole("quiet", 1))
