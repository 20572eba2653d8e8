"""LoRA through PEFT for every method: only the adapters train, the reference is the base with the
adapters off (no second copy), checkpoints hold the adapters and resume exactly, `cohort export`
merges them into a plain HF model, `cohort eval` takes an adapter directory, bad settings fail early."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_methods import METHODS, has_kl, method_config, train
from test_trainer import comparable, metric_lines
from transformers import AutoModelForCausalLM

from cohort.cli import main
from cohort.models.loading import load_policy
from cohort.models.lora import AdapterReference, LoraError
from cohort.models.scoring import completion_logprobs
from cohort.monitoring.console import RunConsole
from cohort.training.trainer import Trainer

pytest.importorskip("peft", reason="LoRA needs PEFT: pip install 'cohort[lora]'")

LORA = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    return path


def _extra(method):
    return ("algorithm.beta=0.04",) if has_kl(method) else ()


@pytest.mark.parametrize("method", METHODS)
def test_lora_trains_only_the_adapters_and_resumes_exactly(tmp_path, tiny_llama_dir, task_file, method):
    extra = (LORA, *_extra(method), "train.steps=4", "train.save_every=2", "train.eval_before=false", "train.eval_after=false")
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(method_config(straight, tiny_llama_dir, task_file, method, *extra))
    train(method_config(split, tiny_llama_dir, task_file, method, *extra, "train.steps=2"))
    train(method_config(split, tiny_llama_dir, task_file, method, *extra, "train.resume=true"))
    assert comparable(metric_lines(split)) == comparable(metric_lines(straight))
    adapters = load_file(straight / "final" / "adapter_model.safetensors")
    assert adapters and all("lora_" in name for name in adapters)
    assert not (straight / "final" / "model.safetensors").exists()  # the base is not copied
    b = load_file(split / "final" / "adapter_model.safetensors")
    assert all(torch.equal(adapters[k], b[k]) for k in adapters)
    assert any(float(t.abs().sum()) > 0 for k, t in adapters.items() if "lora_B" in k)  # B starts at 0: it trained


def test_the_reference_is_the_base_with_the_adapters_off(tmp_path, tiny_llama_dir, task_file):
    trainer = Trainer(method_config(tmp_path / "run", tiny_llama_dir, task_file, "grpo", LORA, "algorithm.beta=0.04",
                                    "train.steps=2", "train.eval_before=false", "train.eval_after=false"), RunConsole("quiet", 2))
    assert isinstance(trainer.reference, AdapterReference) and list(trainer.reference.parameters()) == []
    trainer.train()
    base = load_policy(tiny_llama_dir)
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.bool)
    comp, cmask = torch.tensor([[8, 9]]), torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        reference = completion_logprobs(trainer.reference, ids, mask, comp, cmask)
        policy = completion_logprobs(trainer.policy, ids, mask, comp, cmask)
        original = completion_logprobs(base, ids, mask, comp, cmask)
    assert torch.allclose(reference, original, atol=1e-6) and not torch.allclose(policy, original, atol=1e-6)
    trainer.reset_reference()  # iterative RL: pi_ref <- pi_theta, as a frozen copy of the adapters
    with torch.no_grad():
        assert torch.allclose(completion_logprobs(trainer.reference, ids, mask, comp, cmask), policy, atol=1e-6)
    assert all(p.requires_grad for n, p in trainer.policy.named_parameters() if ".default." in n)


def test_export_merges_into_a_plain_model_and_eval_takes_adapters(tmp_path, tiny_llama_dir, task_file, capsys):
    out = tmp_path / "run"
    train(method_config(out, tiny_llama_dir, task_file, "grpo", LORA, "train.steps=2", "train.eval_before=false"))
    assert main(["export", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out / "final" / "merged")
    adapted = load_policy(out / "final")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5)
    capsys.readouterr()
    assert main(["eval", str(out / "final"), "--config", str(out / "config.yaml"), "--limit", "3", "--samples", "2",
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["models"][0]["summary"]["num_problems"] == 3


@pytest.mark.parametrize(
    "lora, message",
    [
        ("{r: 4, target_modules: [attention_out]}", "does not fit LlamaForCausalLM: .* \\(its linear modules: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj\\)"),
        ("{rank: 4}", "model.lora.rank is not a LoRA option; allowed: alpha, dropout, "),
    ],
)
def test_bad_lora_settings_fail_before_training(tmp_path, tiny_llama_dir, task_file, lora, message):
    with pytest.raises(LoraError, match=message):
        Trainer(method_config(tmp_path / "run", tiny_llama_dir, task_file, "grpo", f"model.lora={lora}"), RunConsole("quiet", 1))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
