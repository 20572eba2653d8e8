"""Models for the cohort-vs-TRL benchmark: the bundled demo model, or a warm-started stand-in.

``tiny`` is the bundled demo model (``src/cohort/assets/demo_model``). ``small`` is a 25.7 M
parameter Llama with an arithmetic character tokenizer of the same kind. It is built from a config with random weights and then
briefly supervised on the arithmetic task (SFT) until sampled accuracy reaches ``target_accuracy``:
with purely random weights every exact-match reward is 0, every GRPO advantage is 0, and cohort
(which skips zero-advantage sequences when beta = 0) would train nothing while TRL still runs a full
forward/backward -- a comparison that would flatter cohort. Built models are cached on disk.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from cohort.assets import BUILTIN_MODELS
from cohort.data.arithmetic import arithmetic_splits
from cohort.rollout import SamplingParams, generate_rollout

CHARACTERS = list("0123456789+-=")
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CACHE_VERSION = 1  # bump when the recipe below changes, so stale cached models are rebuilt


@dataclass(frozen=True)
class ModelRecipe:
    """How a stand-in model is built and warm-started."""

    name: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    sft_lr: float
    sft_batch: int = 128
    sft_max_steps: int = 3000
    warmup_steps: int = 50
    check_every: int = 50
    target_accuracy: float = 0.2
    seed: int = 0


RECIPES = {
    "small": ModelRecipe("small", hidden_size=512, num_layers=8, intermediate_size=1408, num_heads=8, sft_lr=5e-4),
}


SIZES = ("tiny", "small")  # tiny: the bundled demo model; small: RECIPES["small"]


def default_cache_dir() -> Path:
    """Where warm-started stand-in models are kept between benchmark runs."""
    return Path.home() / ".cache" / "cohort" / "bench_models"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of arithmetic problems (digits, +, -, =), plus pad / eos / unk."""
    vocab = {token: index for index, token in enumerate([PAD, EOS, UNK] + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )


def build_random_model(recipe: ModelRecipe, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A seeded, randomly initialised Llama sized by ``recipe`` for ``tokenizer``'s vocabulary."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return model


def _sft_batch(tokenizer, rows: list[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+answer+EOS ids, labels (-100 outside the answer) and the attention mask."""
    sequences, labels = [], []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        sequences.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(len(s) for s in sequences)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # [B, L]
    targets = torch.full((len(rows), width), -100)  # [B, L]
    for i, (sequence, label) in enumerate(zip(sequences, labels)):
        ids[i, : len(sequence)] = torch.tensor(sequence)
        targets[i, : len(label)] = torch.tensor(label)
    return ids, targets, ids != tokenizer.pad_token_id


def sampled_accuracy(model, tokenizer, rows: list[dict[str, str]], seed: int = 0, max_new_tokens: int = 8) -> float:
    """Mean exact-match accuracy of one temperature-1 sample per prompt (cohort's rollout engine)."""
    prompt_ids = [tokenizer(row["prompt"])["input_ids"] for row in rows]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    rollout = generate_rollout(
        model, prompt_ids, 1, params, pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    texts = rollout.decode_completions(tokenizer)
    return sum(text.strip() == row["answer"] for text, row in zip(texts, rows)) / len(rows)


def warm_start(model, tokenizer, recipe: ModelRecipe, log=print) -> dict[str, float]:
    """SFT on arithmetic problems until sampled accuracy reaches the recipe's target (or its step cap)."""
    train, _ = arithmetic_splits(seed=recipe.seed, num_train=recipe.sft_batch * recipe.sft_max_steps, num_test=0)
    probe, _ = arithmetic_splits(seed=recipe.seed + 1, num_train=256, num_test=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.sft_lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup_steps))
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    accuracy, step = 0.0, 0
    model.train()
    for step in range(1, recipe.sft_max_steps + 1):
        ids, targets, mask = _sft_batch(tokenizer, train[(step - 1) * recipe.sft_batch : step * recipe.sft_batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        if step % recipe.check_every == 0:
            model.eval()
            accuracy = sampled_accuracy(model, tokenizer, probe, seed=step)
            model.train()
            log(f"  sft step {step}: loss {float(loss.detach()):.3f}, sampled accuracy {accuracy:.3f}")
            if accuracy >= recipe.target_accuracy:
                break
    model.eval()
    return {"sft_steps": step, "sft_seconds": time.perf_counter() - started, "sampled_accuracy": accuracy}


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def prepare_model(size: str, cache_dir: Path | None = None, log=print) -> Path:
    """A model directory for ``size`` ("tiny" or "small"): the demo model, or the cached warm-started stand-in."""
    if size not in SIZES:
        raise ValueError(f"model size must be one of {SIZES}, got {size!r}")
    if size == "tiny":
        return Path(BUILTIN_MODELS["demo"])
    recipe = RECIPES[size]
    directory = (cache_dir or default_cache_dir()) / f"{size}-v{CACHE_VERSION}"
    if (directory / "bench_model.json").is_file():
        return directory
    log(f"building the {size} stand-in model (random init + SFT warm start) into {directory} ...")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = build_char_tokenizer()
    model = build_random_model(recipe, tokenizer)
    summary = warm_start(model, tokenizer, recipe, log=log)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    info = {"recipe": asdict(recipe), "parameters": parameter_count(model), **summary}
    (partial / "bench_model.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    log(f"  {size}: {info['parameters'] / 1e6:.2f} M parameters, {summary['sft_steps']} SFT steps in "
        f"{summary['sft_seconds']:.0f} s, sampled accuracy {summary['sampled_accuracy']:.2f}")
    return directory
