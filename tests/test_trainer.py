"""End-to-end training on a tiny random HF model: the run directory, resume, presets, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cohort.cli import main
from cohort.config import PRESETS, load_config
from cohort.monitoring.console import RunConsole
from cohort.optimisation.update import optimise
from cohort.training.trainer import StepTimer, Trainer

DESIGN_METRIC_KEYS = {
    "step", "reward/mean", "reward/std", "frac_zero_std", "kl", "clip_frac/low", "clip_frac/high", "entropy",
    "completion_len/mean", "completion_len/max", "truncated_frac", "loss", "grad_norm", "lr", "time/rollout_s",
    "time/reward_s", "time/train_s", "time/step_s", "tokens_per_s",
}


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """A small JSONL task: 'a+b=' prompts with their sums."""
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(6) for b in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_config(out_dir, model_dir, task_file, *overrides):
    base = [
        f"model.path={model_dir}",
        f"data.task={task_file}",
        "data.test_fraction=0.25",
        "data.eval_limit=6",
        "rollout.group_size=4",
        "rollout.prompts_per_step=3",
        "rollout.max_new_tokens=5",
        "algorithm.beta=0.0",
        "optim.lr=1e-3",
        "optim.micro_batch_size=5",
        "train.steps=3",
        "train.save_every=2",
        "train.eval_samples=2",
        f"train.out_dir={out_dir}",
        "log.console=quiet",
        "log.completions_every=1",
        "log.report=false",
        "reward.functions=[{name: 'reward_fixtures:digit_count'}, {name: exact_match, weight: 0.5}]",
    ]
    return load_config(None, base + list(overrides))


def train(config):
    return Trainer(config, RunConsole("quiet", config.train.steps)).train()


def metric_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def one_update(trainer):
    """One batch from the trainer's source, its signal, and one pass of the shared optimisation loop."""
    timer = StepTimer()
    trainer.source.prepare()
    batch = trainer.source.next_batch(timer)
    signal = trainer.method.signal(batch, timer)
    optimise(trainer.method, signal, batch.rollout, signal.loss_mask, signal.trainable, trainer.trainables, trainer.loop)
    return signal


def comparable(metrics):
    return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "tokens_per_s"} for m in metrics]


def test_the_last_curve_point_is_the_after_evaluation_without_sampling_again(tmp_path, tiny_llama_dir, task_file, monkeypatch):
    """train.eval_every=2 over 4 steps: curve points at steps 2 and 4, and the after-training
    evaluation reuses the step-4 point; its files are those of a run that evaluates afresh."""
    from cohort.training import evaluation

    calls: list[str] = []

    def counted(*args, **kwargs):
        calls.append("evaluation")
        return real(*args, **kwargs)

    real = evaluation.evaluate_held_out
    monkeypatch.setattr(evaluation, "evaluate_held_out", counted)
    curve_run, plain_run = tmp_path / "curve", tmp_path / "plain"
    train(run_config(curve_run, tiny_llama_dir, task_file, "train.steps=4", "train.eval_every=2"))
    assert len(calls) == 3  # before, step 2, step 4 (= after)
    train(run_config(plain_run, tiny_llama_dir, task_file, "train.steps=4"))
    assert len(calls) == 5  # before, after
    curve = [json.loads(line) for line in (curve_run / "eval_curve.jsonl").read_text().splitlines()]
    assert [point["step"] for point in curve] == [2, 4]
    after = json.loads((curve_run / "eval_after.json").read_text())
    assert after == json.loads((plain_run / "eval_after.json").read_text())  # the same weights' fingerprint too
    assert after["extra"]["checkpoint"]["step"] == 4 and after["pass_at_k"] == curve[-1]["pass_at_k"]
    assert (curve_run / "eval_after.jsonl").read_text() == (plain_run / "eval_after.jsonl").read_text()


def test_end_to_end_run_directory_contract(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "run"
    summary = train(
        run_config(out, tiny_llama_dir, task_file, "algorithm.beta=0.04", "algorithm.mu=2", "optim.mini_batches=2", "log.report=true")
    )
    assert summary["steps"] == 3
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["algorithm"]["beta"] == 0.04 and resolved["rollout"]["group_size"] == 4
    metrics = metric_lines(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert DESIGN_METRIC_KEYS <= set(m), DESIGN_METRIC_KEYS - set(m)
        assert "reward/digit_count/mean" in m and "reward/exact_match/mean" in m and "accuracy" in m
        assert m["kl"] is not None and m["kl"] >= 0
        assert m["time/step_s"] > 0 and m["lr"] == pytest.approx(1e-3)
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {c["step"] for c in completions} == {1, 2, 3}
    assert {"prompt", "completion", "reward", "rewards", "advantage", "finish_reason"} <= set(completions[0])
    assert list(out.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert (out / "checkpoints" / "step-3" / "trainer_state.pt").is_file()
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    trained = load_file(out / "final" / "model.safetensors")
    initial = load_file(tiny_llama_dir / "model.safetensors")
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), "training changed no weight"
    assert final.config.vocab_size == AutoModelForCausalLM.from_pretrained(tiny_llama_dir).config.vocab_size
    before = json.loads((out / "eval_before.json").read_text())
    after = json.loads((out / "eval_after.json").read_text())
    assert before["num_problems"] == after["num_problems"] == 6
    assert len((out / "eval_after.jsonl").read_text().splitlines()) == 6
    report = (out / "report.html").read_text()
    assert "pass@1" in report and 'id="plot-reward"' in report
    assert (out / "run.log").is_file()


def test_same_seed_same_metrics_and_resume_equals_straight_run(tmp_path, tiny_llama_dir, task_file):
    extra = ("train.steps=4", "train.save_every=2", "algorithm.beta=0.04", "optim.warmup_steps=2")
    straight = tmp_path / "straight"
    train(run_config(straight, tiny_llama_dir, task_file, *extra))
    again = tmp_path / "again"
    train(run_config(again, tiny_llama_dir, task_file, *extra))
    assert comparable(metric_lines(straight)) == comparable(metric_lines(again))

    split = tmp_path / "split"
    train(run_config(split, tiny_llama_dir, task_file, *extra[1:], "train.steps=2"))
    train(run_config(split, tiny_llama_dir, task_file, *extra, "train.resume=true"))
    assert comparable(metric_lines(split)) == comparable(metric_lines(straight))
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(split / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_crash_drops_metrics_written_after_the_checkpoint(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "run"
    train(run_config(out, tiny_llama_dir, task_file, "train.steps=3", "train.save_every=2"))
    # simulate a crash after step 3's metrics but with only the step-2 checkpoint on disk
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-3")
    shutil.rmtree(out / "final")
    trainer = Trainer(run_config(out, tiny_llama_dir, task_file, "train.steps=3", "train.resume=true"), RunConsole("quiet", 3))
    assert trainer.step == 2
    assert [m["step"] for m in metric_lines(out)] == [1, 2]
    trainer.train()
    assert [m["step"] for m in metric_lines(out)] == [1, 2, 3]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_one_step(tmp_path, tiny_llama_dir, task_file, preset):
    config = run_config(
        tmp_path / preset, tiny_llama_dir, task_file,
        f"algorithm.preset={preset}", f"algorithm.beta={PRESETS[preset].settings['algorithm.beta']}", "train.steps=1", "train.eval_before=false",
        "train.eval_after=false", "optim.lr=1e-3",
    )
    train(config)
    (metrics,) = metric_lines(tmp_path / preset)
    assert metrics["step"] == 1 and torch.isfinite(torch.tensor(metrics["loss"]))
    if PRESETS[preset].settings["algorithm.beta"] > 0:
        assert metrics["kl"] is not None


def test_dynamic_sampling_overlong_filter_and_reference_reset(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "dapo"
    train(
        run_config(
            out, tiny_llama_dir, task_file, "algorithm.preset=dapo", "algorithm.beta=0.01", "algorithm.overlong_filter=true",
            "algorithm.ref_reset_every=2", "algorithm.overlong_buffer=0.4", "rollout.group_size=4",
        )
    )
    metrics = metric_lines(out)
    assert all("reward/soft_overlong/mean" in m for m in metrics)
    assert all(m["groups_sampled"] >= 3 for m in metrics)
    state = torch.load(out / "checkpoints" / "step-3" / "trainer_state.pt", weights_only=False)
    assert state["reference_was_reset"] is True and "reference" in state


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_sum_const"])
def test_micro_batch_size_does_not_change_the_gradient(tmp_path, tiny_llama_dir, task_file, aggregation):
    """Gradient accumulation over micro-batches of 1 or of 64 gives one and the same gradient."""
    gradients = []
    for size in (1, 64):
        config = run_config(tmp_path / f"micro{size}", tiny_llama_dir, task_file, f"optim.micro_batch_size={size}",
                            f"algorithm.aggregation={aggregation}", "optim.lr=1e-12", "algorithm.beta=0.04")
        trainer = Trainer(config, RunConsole("quiet", 1))
        signal = one_update(trainer)
        assert signal.trainable.any()
        gradients.append({name: p.grad.clone() for name, p in trainer.policy.named_parameters()})
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], rtol=1e-4, atol=1e-7), name


def test_a_failing_reward_function_does_not_kill_the_run(tmp_path, tiny_llama_dir, task_file):
    out = tmp_path / "flaky"
    train(run_config(out, tiny_llama_dir, task_file, "reward.functions=[{name: 'reward_fixtures:fails_on_letter_a'}, {name: 'reward_fixtures:length_score'}]",
                     "train.eval_before=false", "train.eval_after=false"))
    assert len(metric_lines(out)) == 3


def test_cli_rejects_bad_config_and_bad_dataset_before_loading_a_model(tmp_path, capsys, task_file):
    assert main(["train", "model.path=/nonexistent", f"data.task={task_file}", "rollout.group_size=1"]) == 2
    assert "rollout.group_size=1 is not allowed" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": null}\n')
    code = main(["train", "model.path=/nonexistent", f"data.task={bad}", f"train.out_dir={tmp_path / 'o'}", "log.console=quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: row 2, column 'answer'" in err
    code = main(["train", "model.path=/nonexistent/model", f"data.task={task_file}", f"train.out_dir={tmp_path / 'p'}", "log.console=quiet"])
    assert code == 2
    assert "not found locally" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_run(tmp_path, tiny_llama_dir, task_file, capsys):
    out = tmp_path / "run"
    args = ["train", f"model.path={tiny_llama_dir}", f"data.task={task_file}", f"train.out_dir={out}", "train.steps=1",
            "rollout.max_new_tokens=3", "train.eval_before=false", "train.eval_after=false", "log.console=json",
            "train.overwrite=false",
            "reward.functions=[{name: 'reward_fixtures:digit_count'}]"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["step", "summary"]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_autocast_runs_every_forward_in_bfloat16_and_keeps_log_probs_float32(tmp_path, tiny_llama_dir, task_file):
    """model.autocast=bfloat16: rollout, reference/pi_old and training forwards run their matmuls in
    bf16 (seen at the LM head), weights and gradients stay float32, and training still works."""
    config = run_config(tmp_path / "bf16", tiny_llama_dir, task_file, "model.autocast=bfloat16", "algorithm.beta=0.04",
                        "algorithm.mu=2", "train.steps=2", "train.eval_before=false")
    trainer = Trainer(config, RunConsole("quiet", config.train.steps))
    head_dtypes = []
    for model in (trainer.policy, trainer.reference):
        model.lm_head.register_forward_hook(lambda module, args, output: head_dtypes.append(output.dtype))
    summary = trainer.train()
    assert head_dtypes and set(head_dtypes) == {torch.bfloat16}  # rollout, eval, pi_old, reference, training
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())
    metrics = metric_lines(tmp_path / "bf16")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(torch.isfinite(torch.tensor([m["loss"], m["grad_norm"], m["kl"]])).all() for m in metrics)
    assert summary is not None


def test_autocast_off_leaves_the_forward_in_float32(tmp_path, tiny_llama_dir, task_file):
    config = run_config(tmp_path / "fp32", tiny_llama_dir, task_file, "train.steps=1", "train.eval_before=false",
                        "train.eval_after=false")
    trainer = Trainer(config, RunConsole("quiet", 1))
    head_dtypes = []
    trainer.policy.lm_head.register_forward_hook(lambda module, args, output: head_dtypes.append(output.dtype))
    trainer.train()
    assert head_dtypes and set(head_dtypes) == {torch.float32}
