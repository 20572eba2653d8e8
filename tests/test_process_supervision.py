"""Process supervision end to end: the gold checker as the process reward, credit forms and the
outcome mixed in from the config, the reward-model quality gate, and step ends that cannot be
aligned with the policy's tokens (a sample scored None, never a crashed step)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cohort.algo import process_advantages
from cohort.assets import resolve_builtin
from cohort.config import ConfigError, load_config
from cohort.methods import check_config
from cohort.models.loading import load_tokenizer
from cohort.monitoring.console import RunConsole
from cohort.rewards.process_model import GOLD, ProcessRewardModel
from cohort.rewards.step_spans import StepScores, split_steps, step_tensors, token_ends
from cohort.training.preflight import preflight
from cohort.training.trainer import Trainer

PROMPT, GOLD_TEXT = "12+7-5+30=", "12+7=19\n19-5=14\n14+30=44"


def process_config(out, *overrides):
    return load_config(None, [
        "model.path=builtin:multistep", "data.task=multistep4", "data.eval_limit=4", "rollout.group_size=4",
        "rollout.prompts_per_step=2", "rollout.max_new_tokens=40", "optim.lr=1e-4", "algorithm.beta=0.04",
        "algorithm.advantage=process", "reward.process_model={path: gold}", "train.steps=2", "train.save_every=0",
        "train.eval_before=false", "train.eval_after=false", "train.threads=1", f"train.out_dir={out}",
        "log.console=quiet", "log.report=false", "log.completions_every=0", *overrides,
    ])


@pytest.mark.parametrize("credit, weight", [("sum", 0.0), ("min", 1.0)])
def test_the_gold_checker_drives_process_supervision(tmp_path, credit, weight):
    out = tmp_path / "run"
    config = process_config(out, f"algorithm.process_credit={credit}", f"algorithm.process_outcome_weight={weight}")
    Trainer(config, RunConsole("quiet", 2)).train()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    for m in metrics:
        assert m["process/steps_mean"] >= 1 and m["process/unscored_frac"] == 0.0
        assert 0.0 <= m["process/step_score_mean"] <= 1.0  # gold verdicts: 1 right, 0 wrong
        assert m["advantage/abs_mean"] > 0


def test_a_gold_process_model_scores_steps_with_the_task_checker():
    tokenizer = load_tokenizer(resolve_builtin("builtin:multistep"))
    prm = ProcessRewardModel(GOLD, tokenizer, step_marker="\n")
    texts = [GOLD_TEXT, "12+7=19\n19-5=15\n15+30=45", "12+7-5=14\n14+30=44"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    scores = prm([PROMPT] * 3 + [], texts, ids)
    assert [s.rewards for s in scores] == [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0]]
    assert scores[0].ends == [7, 15, 24]
    assert prm(["what is 12+7?"], ["12+7=19"], [ids[0][:7]]) == [None]  # no multi-step problem in the prompt


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.process_credit=max"], "algorithm.process_credit='max' is not allowed: expected one of min, sum"),
        (["algorithm.advantage=group_norm", "reward.process_model=null", "algorithm.process_credit=min"],
         "algorithm.process_credit='min' is not allowed: it applies only with algorithm.advantage=process"),
        (["algorithm.advantage=group_norm", "reward.process_model=null", "algorithm.process_outcome_weight=0.5"],
         "algorithm.process_outcome_weight=0.5 is not allowed: it applies only with algorithm.advantage=process"),
        (["reward.min_within_group_auc=1.5"], r"reward.min_within_group_auc=1.5 is not allowed: expected a number in \[0, 1\]"),
    ],
)
def test_process_settings_are_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(process_config(tmp_path, *overrides))


def write_prm_report(directory, within_group_auc):
    directory.mkdir(parents=True, exist_ok=True)
    held_out = {} if within_group_auc is None else {"within_group_auc": within_group_auc}
    (directory / "training.json").write_text(json.dumps({"held_out": held_out}))
    return directory


@pytest.mark.parametrize("recorded, gate, message", [
    (0.61, 0.85, r"ranks the samples of one prompt with held-out within-group AUC 0.610, below the quality gate "
                 r"reward.min_within_group_auc=0.85"),
    (None, 0.6, r"records no held-out within-group AUC \(training.json\), so the quality gate"),
])
def test_the_quality_gate_stops_a_run_before_any_weight_loads(tmp_path, recorded, gate, message):
    prm = write_prm_report(tmp_path / "prm", recorded)
    config = process_config(tmp_path / "run", f"reward.process_model={{path: '{prm}'}}", f"reward.min_within_group_auc={gate}")
    with pytest.raises(ValueError, match=message):
        preflight(config)


def test_the_quality_gate_passes_a_good_model_and_ignores_the_gold_checker(tmp_path):
    prm = write_prm_report(tmp_path / "prm", 0.9)
    preflight(process_config(tmp_path / "run", f"reward.process_model={{path: '{prm}'}}", "reward.min_within_group_auc=0.85"))
    preflight(process_config(tmp_path / "run", "reward.min_within_group_auc=0.99"))  # path: gold has nothing to gate
    orm = tmp_path / "orm"
    shutil.copytree(resolve_builtin("builtin:multistep_orm"), orm)  # a real ORM: the reward is built before the gate
    write_prm_report(orm, 0.52)
    outcome = process_config(tmp_path / "run", "algorithm.advantage=group_norm", "reward.process_model=null",
                             f"reward.functions=[{{name: reward_model, path: '{orm}'}}, {{name: final_answer, weight: 0.0}}]",
                             "reward.min_within_group_auc=0.6")
    with pytest.raises(ValueError, match=r"reward.functions\[0\] \(reward_model\).*within-group AUC 0.520"):
        preflight(outcome)


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """A real tokenizer with one token, "b\\nc", that spans a step marker."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5, "\n": 6, "b\nc": 7}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("b\nc|[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def test_a_token_across_two_step_ends_leaves_the_sample_unscored_instead_of_crashing():
    tokenizer = merging_tokenizer()
    text = "a\nb\nc"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [3, 6, 7]  # "b\nc" is one token: steps b and c both end at it
    ends = token_ends(tokenizer, ids, [end for _, end in split_steps(text, "\n")])
    assert ends == [1, 3, 3]  # clamped into [1, 3], never past the completion
    good = StepScores([0.9, 0.1, 0.5], [1, 2, 3])
    bad = StepScores([0.9, 0.1, 0.5], ends)
    lengths = torch.tensor([3, 3])
    rewards, step_ends, mask, scored = step_tensors([good, bad], lengths)
    assert scored.tolist() == [True, False] and not mask[1].any()
    result = process_advantages(rewards, step_ends, mask, lengths, 3, 2, scored=scored)  # would raise without the guard
    assert result.valid.tolist() == [True, False] and (result.values[1] == 0).all()
    with pytest.raises(ValueError, match="strictly increasing"):
        process_advantages(*step_tensors([good, bad])[:3], lengths, 3, 2)
