"""Reward-model training (cohort.reward_training, ``cohort train-rm``) on tiny real HF models.

The key property: what training optimises is what cohort's scorers read. An outcome RM trained
here, loaded by ``build_reward({"name": "reward_model", ...})``, and a PRM loaded by
``ProcessRewardModel`` give exactly the logits of the training-time forward, so held-out metrics
recomputed from the scorers' outputs equal the training report's.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from cohort.cli import main
from cohort.reward_training import (
    REPORT_FILE,
    grouped_metrics,
    within_group_auc,
    DataError,
    OutcomeExample,
    ProcessExample,
    held_out_metrics,
    read_outcome_examples,
    read_process_examples,
    roc_auc,
    train_outcome_model,
    train_process_model,
    with_replay,
    write_examples,
)
from cohort.reward_training.encoding import (
    encode_outcome,
    encode_process,
    separator_ids,
    unit_logits,
)
from cohort.rewards import build_reward
from cohort.rewards.process_model import ProcessRewardModel

GOOD_ENDS, BAD_ENDS, BODY = "0123456789", "uvwxyz", "abcdefghij"
FAST = dict(lr=3e-3, epochs=2, batch_size=16, device="cpu")  # a few hundred ms on the tiny model


def _tail(rng: random.Random, good: bool) -> str:
    """A toy step / completion: a few letters, then a digit when good, one of u..z when bad."""
    return "".join(rng.choice(BODY) for _ in range(rng.randint(1, 5))) + rng.choice(GOOD_ENDS if good else BAD_ENDS)


def outcome_data(count: int, seed: int, chat_every: int = 0) -> list[OutcomeExample]:
    """Separable toy data: a completion is good exactly when it ends in a digit. Every
    ``chat_every``-th prompt is a chat-message list (the reward model renders it with its template)."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        text = f"q{rng.randint(0, 99)}:"
        prompt = [{"role": "user", "content": text}] if chat_every and index % chat_every == 0 else text
        good = index % 2 == 0
        examples.append(OutcomeExample(prompt, _tail(rng, good), float(good)))
    return examples


def process_data(count: int, seed: int) -> list[ProcessExample]:
    """Separable step data: a step is good exactly when it ends in a digit; 1-4 steps per example."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        labels = tuple(float(rng.random() < 0.5) for _ in range(rng.randint(1, 4)))
        examples.append(ProcessExample(f"q{rng.randint(0, 99)}:", tuple(_tail(rng, bool(g)) for g in labels), labels))
    return examples


@pytest.fixture(scope="module")
def trained_orm(tiny_llama_dir, tmp_path_factory):
    """An outcome RM trained from the tiny Llama on 200 toy examples, with an explicit held-out set."""
    out = tmp_path_factory.mktemp("orm") / "rm"
    held_out = outcome_data(60, seed=1, chat_every=5)
    report = train_outcome_model(outcome_data(200, seed=0, chat_every=5), str(tiny_llama_dir), out, held_out=held_out, **FAST)
    return out, report, held_out


@pytest.fixture(scope="module")
def trained_prm(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prm") / "prm"
    held_out = process_data(40, seed=3)
    report = train_process_model(process_data(150, seed=2), str(tiny_llama_dir), out, held_out=held_out,
                                 lr=3e-3, epochs=3, batch_size=16, device="cpu")
    return out, report, held_out


def test_outcome_model_learns_a_separable_rule(trained_orm):
    out, report, held_out = trained_orm
    assert report.held_out.accuracy > 0.9 and report.held_out.auc > 0.95
    assert report.held_out_before.auc < 0.9  # the random head could not tell before training
    assert report.init_mode == "new_head" and report.train_examples == 200 and report.held_out.units == 60
    assert report.optimizer_steps == 2 * 13 == len(report.loss_curve)
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert report.seconds < 10
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["held_out"]["accuracy"] == report.held_out.accuracy and saved["loss_curve"] == report.loss_curve


def test_reward_model_reward_scores_what_training_optimised(trained_orm):
    """build_reward(reward_model) on the written directory gives the training-time logits, in batches
    with padding and chat prompts, so its held-out metrics are the report's."""
    out, report, held_out = trained_orm
    reward = build_reward({"name": "reward_model", "path": str(out), "batch_size": 7})
    scores = reward.fn([e.prompt for e in held_out], [e.completion for e in held_out])
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = reward.fn.tokenizer
    with torch.no_grad():
        expected = [unit_logits(model, [encode_outcome(tokenizer, e, None)], tokenizer.pad_token_id, torch.device("cpu")).item()
                    for e in held_out]
    assert scores == pytest.approx(expected, abs=1e-5)
    recomputed = held_out_metrics(scores, [e.label for e in held_out])
    assert recomputed.accuracy == report.held_out.accuracy
    assert recomputed.auc == pytest.approx(report.held_out.auc, abs=1e-12)


def test_process_model_learns_step_labels(trained_prm):
    _, report, _ = trained_prm
    assert report.held_out.accuracy > 0.9 and report.held_out.auc > 0.95
    assert report.train_units == sum(len(e.labels) for e in process_data(150, seed=2))


def test_process_reward_model_scores_what_training_optimised(trained_prm, char_tokenizer):
    """ProcessRewardModel on the written directory scores each step at its separator with the sigmoid
    of the training-time logit (completions split at the marker as at scoring time)."""
    out, report, held_out = trained_prm
    prm = ProcessRewardModel(str(out), char_tokenizer, step_marker="\n", separator="\n", batch_size=5, device="cpu")
    completions = ["\n".join(e.steps) + "\n" for e in held_out]
    ids = [char_tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    scored = prm([e.prompt for e in held_out], completions, ids)
    model = AutoModelForTokenClassification.from_pretrained(out).eval()
    separator = separator_ids(prm.tokenizer, "\n")
    for example, step_scores in zip(held_out, scored):
        with torch.no_grad():
            expected = unit_logits(model, [encode_process(prm.tokenizer, example, separator, None)], 0, torch.device("cpu"))
        assert step_scores.rewards == pytest.approx(expected.sigmoid().tolist(), abs=1e-6)  # probabilities, not logits
    flat = [math.log(r / (1 - r)) for s in scored for r in s.rewards]  # back to logits
    recomputed = held_out_metrics(flat, [label for e in held_out for label in e.labels])
    assert recomputed.accuracy == report.held_out.accuracy
    assert recomputed.auc == pytest.approx(report.held_out.auc, abs=1e-12)


def test_continued_training_starts_from_the_saved_model_and_changes_it(trained_orm, tmp_path):
    first_dir, first, held_out = trained_orm
    fresh = outcome_data(64, seed=7)
    report = train_outcome_model(fresh, str(first_dir), tmp_path / "round-2", held_out=held_out, lr=1e-3, epochs=1,
                                 batch_size=16, device="cpu")
    assert report.init_mode == "continued"
    assert report.held_out_before == first.held_out  # the same model (head included) on the same held-out set
    assert len(report.history) == 1 and report.history[0]["held_out"]["accuracy"] == first.held_out.accuracy
    before, after = load_file(first_dir / "model.safetensors"), load_file(tmp_path / "round-2" / "model.safetensors")
    assert before.keys() == after.keys()
    assert not torch.equal(before["score.weight"], after["score.weight"])
    assert not torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    in_place = train_outcome_model(fresh, str(tmp_path / "round-2"), tmp_path / "round-2", held_out=held_out,
                                   lr=1e-3, device="cpu")  # out_dir = init: replaced atomically
    assert in_place.init_mode == "continued" and len(in_place.history) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-2"]  # no temporary directory left behind


def test_training_is_deterministic_for_a_seed(tiny_llama_dir, tmp_path):
    data = outcome_data(48, seed=4)
    runs = [train_outcome_model(data, str(tiny_llama_dir), tmp_path / name, held_out_fraction=0.25, seed=seed, **FAST)
            for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    assert runs[0].loss_curve == runs[1].loss_curve and runs[0].held_out == runs[1].held_out
    weights = [load_file(tmp_path / name / "model.safetensors") for name in "ab"]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert runs[2].loss_curve != runs[0].loss_curve  # another seed: another head, split and order
    assert runs[0].held_out_examples == 12 and runs[0].train_examples == 36


def test_a_model_with_the_wrong_head_is_refused(trained_prm, trained_orm, tmp_path):
    with pytest.raises(ValueError, match="ForTokenClassification; outcome reward training starts from"):
        train_outcome_model(outcome_data(4, 0), str(trained_prm[0]), tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="takes ProcessExamples"):
        train_process_model(outcome_data(4, 0), str(trained_orm[0]), tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="unknown options"):
        train_outcome_model(outcome_data(4, 0), str(trained_orm[0]), tmp_path / "x", learning_rate=1.0)


def test_max_length_truncates_like_the_scorer(trained_orm, trained_prm, tmp_path):
    """Outcome inputs are right-truncated as RewardModelReward(max_length=...) does; PRM steps past
    the limit are dropped (and examples with none left)."""
    out, _, held_out = trained_orm
    report = train_outcome_model(held_out[:8], str(out), tmp_path / "orm", held_out=held_out[:8], max_length=6, device="cpu",
                                 eval_before=False)
    assert report.truncated > 0
    reward = build_reward({"name": "reward_model", "path": str(tmp_path / "orm"), "max_length": 6})
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "orm").eval()
    with torch.no_grad():
        expected = [unit_logits(model, [encode_outcome(reward.fn.tokenizer, e, 6)], 0, torch.device("cpu")).item() for e in held_out[:8]]
    assert reward.fn([e.prompt for e in held_out[:8]], [e.completion for e in held_out[:8]]) == pytest.approx(expected, abs=1e-5)
    long = ProcessExample("q:", ("abcdefgh1", "b2"), (1.0, 1.0))
    prm_report = train_process_model([long, ProcessExample("q:", ("a1",), (1.0,))], str(trained_prm[0]), tmp_path / "prm",
                                      held_out=[], max_length=6, device="cpu")
    assert prm_report.dropped == 1 and prm_report.train_units == 1 and prm_report.held_out is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 2.0, 3.25]), st.booleans()), min_size=1, max_size=30))
def test_auc_equals_the_pair_count(pairs):
    """Mann-Whitney AUC with ties counted half, against the brute-force count over all pairs."""
    scores, positive = [s for s, _ in pairs], [p for _, p in pairs]
    pos = [s for s, p in pairs if p]
    neg = [s for s, p in pairs if not p]
    if not pos or not neg:
        assert roc_auc(scores, positive) is None
        return
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert roc_auc(scores, positive) == wins / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), st.booleans(), st.integers(0, 3)), min_size=1, max_size=30))
def test_within_group_auc_counts_only_pairs_of_one_group(rows):
    """Within-group AUC against the brute-force count over (positive, negative) pairs that share a group."""
    scores, positive, groups = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    pairs = [(a, b) for a in rows for b in rows if a[1] and not b[1] and a[2] == b[2]]
    auc, count = within_group_auc(scores, positive, groups)
    assert count == len(pairs)
    if not pairs:
        assert auc is None
        return
    assert auc == pytest.approx(sum(1.0 if a[0] > b[0] else 0.5 if a[0] == b[0] else 0.0 for a, b in pairs) / len(pairs), abs=1e-12)


def test_within_group_auc_is_not_the_pooled_auc():
    """A score that only knows how hard a prompt is: an easy prompt (7 right, 1 wrong) scores high, a
    hard one (1 right, 7 wrong) low, and within each prompt the wrong sample scores a little higher.
    Pooled, it looks good (AUC 49/64); within groups it ranks every pair backwards (0.0)."""
    scores = [0.9] * 7 + [0.95] + [0.1] + [0.15] * 7
    positive = [True] * 7 + [False] + [True] + [False] * 7
    groups = ["easy"] * 8 + ["hard"] * 8
    assert roc_auc(scores, positive) == 49 / 64
    assert within_group_auc(scores, positive, groups) == (0.0, 14)


def test_grouped_metrics_score_a_sample_by_its_weakest_step():
    logits = [[2.0, -1.0], [0.5, 0.4], [1.0], [-2.0, 3.0, 1.0]]
    labels = [(1.0, 0.0), (1.0, 1.0), (1.0,), (0.0, 0.0, 0.0)]
    groups = ["p", "p", "q", "q"]
    m = grouped_metrics(logits, labels, groups, process=True)
    # weakest steps: p: -1.0 (label 0) vs 0.4 (label 1) -> right; q: 1.0 (label 1) vs -2.0 (label 0) -> right
    assert (m.within_group_auc, m.within_group_pairs) == (1.0, 2)
    # step 1: p: 0.5 (1) vs 2.0 (1): no pair; q: 1.0 (1) vs -2.0 (0): right; step 2: p: 0.4 (1) vs -1.0 (0): right
    assert m.per_step_within_group_auc == [1.0, 1.0, None]
    assert m.units == 8 and m.majority_accuracy == 0.5
    outcome = grouped_metrics([[2.0], [1.0], [0.0], [3.0]], [(1.0,), (0.0,), (1.0,), (0.0,)], groups, process=False)
    assert (outcome.within_group_auc, outcome.per_step_within_group_auc) == (0.5, [])


def test_the_held_out_split_keeps_every_prompt_whole(tiny_llama_dir, tmp_path):
    data = [OutcomeExample(f"q{i // 6}:", _tail(random.Random(i), i % 2 == 0), float(i % 2 == 0)) for i in range(60)]
    report = train_outcome_model(data, str(tiny_llama_dir), tmp_path / "rm", held_out_fraction=0.2, **FAST)
    assert report.held_out_examples == 12 and report.train_examples == 48  # two whole prompts of six samples
    assert report.held_out.within_group_pairs == 2 * 3 * 3  # each held-out prompt: 3 good x 3 bad samples


def test_early_stopping_keeps_the_best_epoch(tiny_llama_dir, tmp_path):
    data, held = outcome_data(64, seed=8), outcome_data(40, seed=9)
    report = train_outcome_model(data, str(tiny_llama_dir), tmp_path / "rm", held_out=held, lr=3e-3, epochs=6, batch_size=16,
                                 device="cpu", patience=1)
    scores = [e["within_group_auc"] if e["within_group_auc"] is not None else e["auc"] for e in report.epoch_held_out]
    assert 1 <= report.best_epoch <= len(scores) <= 6
    assert scores[report.best_epoch - 1] == max(scores)
    assert len(scores) == 6 or scores[-1] <= max(scores)  # stopped one epoch after no improvement
    assert report.held_out.to_dict() == report.epoch_held_out[report.best_epoch - 1]
    saved = build_reward({"name": "reward_model", "path": str(tmp_path / "rm")}).fn([e.prompt for e in held], [e.completion for e in held])
    assert held_out_metrics(saved, [e.label for e in held]).accuracy == report.held_out.accuracy  # the best epoch's weights


def test_held_out_metrics_threshold_and_loss():
    metrics = held_out_metrics([2.0, -1.0, 0.0, -3.0], [1.0, 0.0, 0.25, 0.75])  # 0.25 is negative, 0.75 positive
    assert metrics.positives == 2 and metrics.negatives == 2
    assert metrics.accuracy == 0.5  # logit 0 -> sigmoid 0.5 -> predicted positive
    assert metrics.auc == 0.5


BAD_ROWS = [
    ("outcome", '{"prompt": "a", "completion": "b", "label": 1}\n{"prompt": "a", "completion": "b"', r"row 2: not valid JSON"),
    ("outcome", '{"prompt": "a", "completion": "b", "label": 1}\n{"prompt": "a", "label": 1}', r"row 2: column 'completion': missing"),
    ("outcome", '{"prompt": "a", "completion": "b", "label": 1.5}', r"row 1: column 'label': a label must be a number in \[0, 1\]"),
    ("outcome", '{"prompt": "a", "completion": "b", "label": "good"}', r"row 1: column 'label'"),
    ("outcome", '{"prompt": 3, "completion": "b", "label": 0}', r"row 1: column 'prompt'"),
    ("outcome", '{"prompt": "a", "completion": ["b"], "label": 0}', r"row 1: column 'completion': must be a string"),
    ("process", '\n\n{"prompt": "a", "steps": ["x", "y"], "labels": [1]}', r"row 3: column 'labels': 1 labels for 2 steps"),
    ("process", '{"prompt": "a", "steps": "x", "labels": [1]}', r"row 1: column 'steps': must be a non-empty list"),
    ("process", '{"prompt": "a", "steps": ["x", " "], "labels": [1, 0]}', r"row 1: column 'steps'"),
    ("process", '{"prompt": "a", "completion": "x\\ny", "labels": [1, 2]}', r"row 1: column 'labels': a label must be"),
    ("process", '{"prompt": "a", "labels": [1]}', r"row 1: column 'steps': missing"),
    ("process", '[1, 2]', r"row 1: expected a JSON object"),
]


@pytest.mark.parametrize("kind, content, message", BAD_ROWS)
def test_malformed_rows_name_file_row_and_column(tmp_path, kind, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    read = read_outcome_examples if kind == "outcome" else read_process_examples
    with pytest.raises(DataError, match=rf"^{path}: {message}"):
        read(path)


def test_readers_take_every_layout_and_round_trip(tmp_path):
    path = tmp_path / "steps.jsonl"
    rows = [
        {"prompt": "p", "steps": [" a1 ", "b2"], "labels": [1, 0.5]},
        {"prompt": "p", "completions": ["a1", "b2"], "labels": [True, False]},  # TRL's stepwise layout
        {"prompt": [{"role": "user", "content": "p"}], "completion": "a1\n\n b2 \n", "labels": [1, 0]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = read_process_examples(path)
    assert [e.steps for e in examples] == [("a1", "b2")] * 3  # stripped, blank steps gone: what the PRM reads
    assert [e.labels for e in examples] == [(1.0, 0.5), (1.0, 0.0), (1.0, 0.0)]
    assert read_process_examples(write_examples(tmp_path / "again.jsonl", examples)) == examples
    outcome = outcome_data(5, seed=0, chat_every=2)
    assert read_outcome_examples(write_examples(tmp_path / "o.jsonl", outcome)) == outcome


def test_replay_mixes_a_seeded_share_of_earlier_data():
    fresh, earlier = outcome_data(30, seed=0), outcome_data(100, seed=1)
    mixed = with_replay(fresh, earlier, share=0.25, seed=3)
    assert mixed[:30] == fresh and len(mixed) == 40 and all(e in earlier for e in mixed[30:])
    assert mixed == with_replay(fresh, earlier, share=0.25, seed=3)
    assert len(with_replay(fresh, earlier[:4], share=0.5)) == 34  # as far as the earlier data reaches


def test_cli_trains_both_kinds_end_to_end(tiny_llama_dir, tmp_path, capsys):
    data = write_examples(tmp_path / "orm.jsonl", outcome_data(120, seed=0))
    code = main(["train-rm", "outcome", str(data), "--base", str(tiny_llama_dir), "--out", str(tmp_path / "orm"),
                 "--held-out", "0.2", "--epochs", "2", "--lr", "3e-3", "--batch-size", "16", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "held-out: within-group AUC" in printed and "majority class" in printed
    assert json.loads((tmp_path / "orm" / REPORT_FILE).read_text())["held_out_examples"] == 25  # 0.2 x 120, whole prompts
    rows = [{"prompt": e.prompt, "completion": ";".join(e.steps), "labels": list(e.labels)} for e in process_data(60, seed=2)]
    (tmp_path / "prm.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    held = write_examples(tmp_path / "held.jsonl", process_data(10, seed=3))
    code = main(["train-rm", "process", str(tmp_path / "prm.jsonl"), "--base", str(tiny_llama_dir), "--out",
                 str(tmp_path / "prm"), "--held-out", str(held), "--step-marker", ";", "--lr", "3e-3", "--device", "cpu"])
    assert code == 0 and "held-out: within-group AUC" in capsys.readouterr().out
    report = json.loads((tmp_path / "prm" / REPORT_FILE).read_text())
    assert report["held_out_examples"] == 10 and report["train_units"] == sum(len(r["labels"]) for r in rows)
    code = main(["train-rm", "outcome", str(data), "--init", str(tmp_path / "orm"), "--out", str(tmp_path / "orm2"),
                 "--device", "cpu"])
    assert code == 0 and "continued from" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(tiny_llama_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b", "label": 1}\n{"prompt": "a", "completion": "b", "label": 7}\n')
    code = main(["train-rm", "outcome", str(data), "--base", str(tiny_llama_dir), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and f"{data}: row 2: column 'label'" in error
    code = main(["train-rm", "outcome", str(data), "--out", str(tmp_path / "o")])
    assert code == 2 and "needs --base MODEL" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
