"""Mistakes users make, as a table: what they typed -> the exit code -> the one line they get.

Every error is one line on stderr that names the problem and the fix, before any model loads (these
cases fail in the checks that need no weights: config, run directory, data, model directory,
rewards), and the run's run.log records it when a run directory was opened. The exit code is 2 for
bad input.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from cohort.cli import main

ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(5)]


def make_mistake_files(root: Path, model_dir: Path) -> Path:
    """The inputs the cases name, in ``root``: good and broken data files, configs, reward modules, a
    non-causal model (scripts/mistakes_table.py builds them too)."""
    (root / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "empty.jsonl").write_text("\n")
    (root / "broken.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "1+1=", "answer": \n')
    (root / "no_answer.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in ROWS))
    (root / "blank_prompt.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"prompt": " ", "answer": "1"}) + "\n")
    (root / "task.csv").write_text("prompt,answer\n1+1=,2\n")
    (root / "bad.yaml").write_text("rollout:\n  group_size: [4\n")
    (root / "a_file").write_text("")
    (root / "reward_with_syntax_error.py").write_text("def score(prompts, completions\n")
    (root / "reward_raising_at_import.py").write_text("import os\nTOKEN = os.environ['NO_SUCH_VARIABLE_FOR_COHORT']\n")
    (root / "my_local_reward.py").write_text("def score(prompts, completions, **_):\n    return [1.0] * len(completions)\n")
    from transformers import AutoConfig, AutoModelForSequenceClassification

    classifier = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_dir, num_labels=1))
    classifier.save_pretrained(root / "classifier")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_llama_dir):
    return make_mistake_files(tmp_path_factory.mktemp("mistakes"), tiny_llama_dir)


def base_args(files, tiny_llama_dir, out):
    return [f"model.path={tiny_llama_dir}", f"data.task={files / 'task.jsonl'}", "data.test_fraction=0.2",
            "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=3", "train.steps=1",
            "train.eval_before=false", "train.eval_after=false", f"train.out_dir={out}", "log.console=quiet",
            "log.report=false"]


# (id, command after "cohort", exit code, the line's pattern). {files}, {model}, {out} are filled in;
# a command starting with "train+" is `cohort train` with base_args() and then the rest.
CASES = [
    ("unknown key", "train+ rollout.group_sizes=4", 2, r"unknown config key 'rollout.group_sizes'; did you mean 'rollout.group_size'"),
    ("wrong type", "train+ rollout.group_size=four", 2, r"rollout.group_size='four' is not allowed: expected int"),
    ("out of range", "train+ optim.lr=-1", 2, r"optim.lr=-1.0 is not allowed: expected a float > 0"),
    ("no equals sign", "train+ rollout.group_size", 2, r"override 'rollout.group_size' must look like section.key=value"),
    ("another method's key", "train+ algorithm.method=sft algorithm.beta=0.1", 2, r"algorithm.beta belongs to method grpo / ppo, not sft"),
    ("unknown method", "train+ algorithm.method=dqn", 2, r"algorithm.method='dqn' is not allowed: expected one of dpo, grpo"),
    ("unknown preset", "train+ algorithm.preset=drgrpo", 2, r"algorithm.preset='drgrpo' is not allowed: expected one of"),
    ("group of one", "train+ rollout.group_size=1", 2, r"rollout.group_size=1 is not allowed: expected an int >= 2"),
    ("process without a PRM", "train+ algorithm.advantage=process", 2, r"reward.process_model=None is not allowed"),
    ("list entry that is not there", "train+ 'reward.functions=[{name: exact_match}]' reward.functions.3.weight=2", 2,
     r"'reward.functions.3.weight': '3' is not an entry of the list \(it has 1"),
    ("missing config file", "train {files}/nope.yaml", 2, r"config file '.*nope.yaml' does not exist"),
    ("YAML syntax error", "train {files}/bad.yaml", 2, r"bad.yaml: not valid YAML: line \d+, column \d+"),
    ("unknown built-in config", "train builtin:demos", 2, r"unknown built-in config 'builtin:demos'; available: builtin:demo"),
    ("missing model", "train+ model.path=/nonexistent/model", 2, r"model '/nonexistent/model' not found locally"),
    ("a reward model as the policy", "train+ model.path={files}/classifier", 2,
     r"holds a LlamaForSequenceClassification, not a causal language model"),
    ("missing data file", "train+ data.task={files}/nope.jsonl", 2, r"dataset file '.*nope.jsonl' does not exist"),
    ("empty JSONL", "train+ data.task={files}/empty.jsonl", 2, r"empty.jsonl: the file holds no rows"),
    ("broken JSONL line", "train+ data.task={files}/broken.jsonl", 2, r"broken.jsonl: row 2: not valid JSON"),
    ("missing answer column", "train+ data.task={files}/no_answer.jsonl", 2, r"no column 'answer'; the columns are: prompt"),
    ("blank prompt", "train+ data.task={files}/blank_prompt.jsonl", 2, r"row 2, column 'prompt': expected a non-empty string"),
    ("CSV data", "train+ data.task={files}/task.csv", 2, r"unsupported file type '.csv'; expected one of .jsonl, .json, .parquet"),
    ("out_dir is a file", "train+ train.out_dir={files}/a_file", 2, r"train.out_dir='.*a_file' is a file, not a directory"),
    ("out_dir cannot be written", "train+ train.out_dir=/proc/cohort-run", 2, r"train.out_dir='/proc/cohort-run' cannot be written"),
    ("no chat template", "train+ model.path=builtin:demo model.chat_template=true", 2,
     r"has no chat template \(set model.chat_template=false"),
    ("unknown reward", "train+ 'reward.functions=[{name: exact_matches}]'", 2, r"unknown reward 'exact_matches'; built-in rewards:"),
    ("reward module that does not exist", "train+ 'reward.functions=[{name: no_such_module:fn}]'", 2,
     r"cannot import module 'no_such_module'"),
    ("reward module with a syntax error", "train+ 'reward.functions=[{name: reward_with_syntax_error:score}]'", 2,
     r"module 'reward_with_syntax_error' has a syntax error at .*reward_with_syntax_error.py:1: '\(' was never closed"),
    ("reward module that raises on import", "train+ 'reward.functions=[{name: reward_raising_at_import:score}]'", 2,
     r"importing module 'reward_raising_at_import' raised KeyError: 'NO_SUCH_VARIABLE_FOR_COHORT' \(at .*:2\)"),
    ("correctness that is not a bool", "train+ 'reward.functions=[{name: exact_match, correctness: yes please}]'", 2,
     r"reward 'exact_match': correctness must be true or false, got 'yes please'"),
    ("no reward can ever score", "config+ reward.max_failed_steps=-1", 2, r"reward.max_failed_steps=-1 is not allowed: expected an int >= 0"),
    ("wrong reward option", "train+ 'reward.functions=[{name: format, patern: x}]'", 2, r"reward 'format' does not take options \['patern'\]"),
    ("SFT without targets", "train+ algorithm.method=sft sft.target_column=solution", 2,
     r"sft.target_column='solution': the training rows have no such column"),
    ("preference pairs without columns", "train+ algorithm.method=dpo dpo.pairs=dataset", 2, r"dpo.pairs=dataset needs a column 'chosen'"),
    ("RFT without a correctness rule", "train+ algorithm.method=rft 'reward.functions=[{name: format}]'", 2,
     r"method rft keeps correct samples, but no reward function measures correctness"),
    ("unknown tracker", "train+ log.trackers=[tensorbored]", 2, r"unknown tracker 'tensorbored'.*did you mean 'tensorboard'"),
    ("bad LoRA option", "train+ 'model.lora={rank: 4}'", 2, r"model.lora.rank is not a LoRA option; allowed: alpha"),
    ("CPU offload without CUDA", "train+ distributed.strategy=fsdp2 distributed.cpu_offload=true", 2,
     r"distributed.cpu_offload=true needs CUDA devices \(model.device resolves to cpu\)"),
    ("unknown rollout engine", "train+ rollout.engine=vlm", 2, r"rollout.engine='vlm' is not allowed: expected one of native, vllm"),
    ("TIS with the native engine", "train+ algorithm.tis_cap=2", 2,
     r"algorithm.tis_cap=2.0 is not allowed: expected null with rollout.engine=native"),
    ("vLLM engine without vLLM", "train+ rollout.engine=vllm", 2,  # in .venv-vllm: the tiny model's heads are too small
     r"rollout.engine=vllm: (vLLM is not installed in this environment: `make vllm`|.*attention heads of size 16)"),
    ("config: missing model", "config+ model.path=/nonexistent/model", 2, r"model '/nonexistent/model' not found locally"),
    ("config: missing data", "config+ data.task={files}/nope.jsonl", 2, r"dataset file '.*nope.jsonl' does not exist"),
    ("config: missing reward module", "config+ 'reward.functions=[{name: no_such_module:fn}]'", 2, r"cannot import module 'no_such_module'"),
    ("eval: k above the samples", "eval builtin:demo --samples 2 --k 8", 2, r"--k 8: every k must lie in 1..2, the samples per problem"),
    ("eval: k not a number", "eval builtin:demo --k eight", 2, r"--k 'eight': expected comma-separated whole numbers"),
    ("report of a directory that holds no run", "report {files}", 2, r"has no metrics.jsonl: not a cohort run directory"),
    ("train-rm without a base", "train-rm outcome {files}/task.jsonl --out {out}", 2, r"train-rm needs --base MODEL"),
]


def argv_of(command: str, files: Path, model: Path, out: Path) -> list[str]:
    fill = {"{files}": str(files), "{model}": str(model), "{out}": str(out)}
    words = [re.sub(r"\{files\}|\{model\}|\{out\}", lambda m: fill[m.group(0)], word) for word in shlex.split(command)]
    for verb in ("train", "config"):
        if words[0] == f"{verb}+":
            return [verb, *base_args(files, model, out), *words[1:]]
    return words


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_mistake_gets_one_line_that_names_it(case, files, tiny_llama_dir, tmp_path, capsys, monkeypatch):
    _, command, code, pattern = case
    monkeypatch.chdir(files)  # the reward modules of the cases live in the current directory, as a user's would
    out = tmp_path / "run"
    assert main(argv_of(command, files, tiny_llama_dir, out)) == code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cohort: error: "), captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (out / "checkpoints").exists() and not (out / "final").exists()  # stopped before any training
    log = out / "run.log"
    if log.is_file():  # the run directory was opened: its log records the error too
        assert lines[0] in log.read_text()


def test_an_error_after_the_run_directory_opened_lands_in_run_log(files, tiny_llama_dir, tmp_path, capsys):
    """Mistakes found before anything runs leave no run directory at all; one found once the run's
    directory is open (a resume whose settings changed) is also written to its run.log."""
    out = tmp_path / "run"
    assert main(["train", *base_args(files, tiny_llama_dir, out), f"data.task={files / 'empty.jsonl'}"]) == 2
    assert not out.exists()
    assert main(["train", *base_args(files, tiny_llama_dir, out)]) == 0
    capsys.readouterr()
    assert main(["train", *base_args(files, tiny_llama_dir, out), "train.resume=true", "optim.lr=0.5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("cohort: error: train.resume=true with a changed config (optim.lr: 1e-06 -> 0.5)")
    assert error in (out / "run.log").read_text()


def test_overrides_without_a_config_start_from_the_library_defaults(files, tiny_llama_dir, tmp_path, capsys):
    """Not from the demo's settings: only what was typed differs from docs/config.md."""
    out = tmp_path / "run"
    assert main(["config", *base_args(files, tiny_llama_dir, out)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["optim"]["lr"] == 1e-6 and config["train"]["overwrite"] is False and config["train"]["threads"] is None
    assert main(["config", "builtin:demo"]) == 0  # the demo's own settings, when named
    demo = yaml.safe_load(capsys.readouterr().out)
    assert demo["rollout"]["max_new_tokens"] == 8 and demo["train"]["overwrite"] is False


def test_nested_options_take_dotted_overrides(files, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*base_args(files, tiny_llama_dir, out), "model.lora.r=4", "model.lora.alpha=8",
            "reward.functions=[{name: exact_match}, {name: format}]", "reward.functions.1.weight=0.5"]
    assert main(["config", *args]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["lora"] == {"r": 4, "alpha": 8}
    assert config["reward"]["functions"] == [{"name": "exact_match"}, {"name": "format", "weight": 0.5}]


def test_a_reward_module_in_the_current_directory_is_found(files, tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """As ``python -m`` finds it; the ``cohort`` command's own sys.path does not hold the current directory."""
    monkeypatch.chdir(files)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(files))])
    assert main(["config", *base_args(files, tiny_llama_dir, tmp_path / "run"),
                 "reward.functions=[{name: my_local_reward:score}]"]) == 0


def test_correctness_true_turns_held_out_evaluation_on_for_a_custom_reward(files, tiny_llama_dir, tmp_path, capsys):
    """Without the key the run says once why it does not evaluate and how to turn it on; with it, it evaluates."""
    spec = "{name: 'reward_fixtures:correct_when_digit'"
    common = [*base_args(files, tiny_llama_dir, tmp_path / "off"), "train.eval_after=true", "log.console=plain"]
    assert main(["train", *common, f"reward.functions=[{spec}}}]"]) == 0
    said = capsys.readouterr()
    assert "held-out evaluation is off: no reward says which samples are correct (rewards: correct_when_digit); " \
           "add correctness: true" in said.out + said.err
    assert not (tmp_path / "off" / "eval_after.json").exists()
    on = [*base_args(files, tiny_llama_dir, tmp_path / "on"), "train.eval_after=true"]
    assert main(["train", *on, f"reward.functions=[{spec}, correctness: true}}]"]) == 0
    assert json.loads((tmp_path / "on" / "eval_after.json").read_text())["num_problems"] == 5


def test_correctness_false_takes_a_rule_out_of_the_accuracy():
    from cohort.rewards import correctness_reward
    from cohort.rewards.registry import build_reward

    rule, marked_off = build_reward({"name": "exact_match"}), build_reward({"name": "exact_match", "correctness": False})
    assert correctness_reward([rule]) is rule and correctness_reward([marked_off]) is None
