"""Models for the cohort-vs-TRL benchmark: the bundled demo model, or a warm-started stand-in.

``tiny`` is the bundled demo model (``src/cohort/assets/demo_model``). ``small`` is a 25.7 M
parameter Llama with an arithmetic character tokenizer of the same kind. It is built from a config with random weights and then
briefly supervised on the arithmetic task (SFT) until sampled accuracy reaches ``target_accuracy``:
with purely random weights every exact-match reward is 0, every GRPO advantage is 0, and cohort
(which skips zero-advantage sequences when beta = 0) would train nothing while TRL still runs a full
forward/backward -- a comparison that would flatter cohort. Built models are cached on disk.

``long`` is a 5.6 M-parameter "long writer" for the long-completion benchmark cells: it answers
an arithmetic problem on its first line and then keeps writing a filler tail of dots whose length
it chooses at random (0 to ~500 characters), so completion lengths spread over a 128- or 512-token
budget and it seldom stops early. It is warm-started in two SFT stages (see :class:`LongWriterRecipe`)
and scored with :class:`FirstLineMatch` (exact match of the first line against the answer), so
rewards still vary within a group whatever the length.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
CACHE_VERSION = 1  # bump (or a recipe's cache_version) when a recipe changes, so stale cached models are rebuilt


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
    max_positions: int = 256
    betas: tuple[float, float] = (0.9, 0.999)
    cache_version: int = CACHE_VERSION


@dataclass(frozen=True)
class LongWriterRecipe(ModelRecipe):
    """A model that answers on its first line, then writes a filler tail of random length.

    Loss on the completion only. Stage 1 (cheap, short sequences) teaches the arithmetic: targets
    ``answer + "\\n"`` (no EOS: what follows the first line is left to stage 2), until the sampled
    first-line accuracy reaches ``target_accuracy`` (or ``sft_max_steps``). Stage 2 (``long_steps``
    steps of ``long_batch`` rows) teaches the tail: targets ``answer + "\\n" + filler * k + <eos>``
    with k ~ U{0..tail_max}, so the model learns a small chance of stopping at each character and
    its completions spread over the whole budget.
    """

    filler: str = "."
    tail_max: int = 600
    long_steps: int = 60
    long_batch: int = 16
    long_lr: float = 3e-4
    probe_budgets: tuple[int, ...] = (128, 512)


RECIPES: dict[str, ModelRecipe] = {
    "small": ModelRecipe("small", hidden_size=512, num_layers=8, intermediate_size=1408, num_heads=8, sft_lr=5e-4),
    "long": LongWriterRecipe("long", hidden_size=256, num_layers=7, intermediate_size=704, num_heads=4, sft_lr=1e-3,
                             betas=(0.9, 0.98), sft_batch=64, sft_max_steps=1500, warmup_steps=100, target_accuracy=0.3,
                             max_positions=1024),
}


SIZES = ("tiny", "small", "long")  # tiny: the bundled demo model; small, long: RECIPES[size]


def default_cache_dir() -> Path:
    """Where warm-started stand-in models are kept between benchmark runs."""
    return Path.home() / ".cache" / "cohort" / "bench_models"


def recipe_characters(recipe: ModelRecipe | None) -> list[str]:
    """The characters a recipe's tokenizer has one token each for."""
    if isinstance(recipe, LongWriterRecipe):
        return CHARACTERS + ["\n"] + [c for c in dict.fromkeys(recipe.filler) if c not in CHARACTERS + ["\n"]]
    return CHARACTERS


def build_char_tokenizer(characters: Sequence[str] = CHARACTERS) -> PreTrainedTokenizerFast:
    """One token per character (default: those of arithmetic problems: digits, +, -, =), plus pad / eos / unk."""
    vocab = {token: index for index, token in enumerate([PAD, EOS, UNK, *characters])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left",
        clean_up_tokenization_spaces=False,
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
        max_position_embeddings=recipe.max_positions,
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


class FirstLineMatch:
    """1.0 when the completion's first line, stripped, equals the row's answer; else 0.0.

    The long writer's reward: what follows the first line (the filler tail, of any length,
    truncated or not) does not count, so rewards vary within a group independently of length.
    """

    is_correctness = True

    def __init__(self, answer_column: str = "answer") -> None:
        self.answer_column = answer_column
        self.__name__ = "first_line_match"

    def extract_answer(self, completion: str) -> str | None:
        return completion.split("\n", 1)[0].strip() or None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        if self.answer_column not in columns:
            raise KeyError(f"first_line_match needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        return [
            None if answer is None else float(completion.split("\n", 1)[0].strip() == str(answer).strip())
            for completion, answer in zip(completions, columns[self.answer_column])
        ]


def _sft_batch(tokenizer, rows: list[dict[str, str]], targets: Sequence[str] | None = None, eos: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+target(+EOS) ids, labels (-100 outside the target) and the attention mask.
    The targets are the rows' answers unless ``targets`` (one per row) says otherwise."""
    sequences, labels = [], []
    for row, target in zip(rows, [row["answer"] for row in rows] if targets is None else targets):
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(target, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
        sequences.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(len(s) for s in sequences)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # [B, L]
    targets = torch.full((len(rows), width), -100)  # [B, L]
    for i, (sequence, label) in enumerate(zip(sequences, labels)):
        ids[i, : len(sequence)] = torch.tensor(sequence)
        targets[i, : len(label)] = torch.tensor(label)
    return ids, targets, ids != tokenizer.pad_token_id


def sample_completions(model, tokenizer, rows: list[dict[str, str]], seed: int = 0, max_new_tokens: int = 8,
                       group_size: int = 1):
    """``group_size`` temperature-1 samples per prompt from cohort's rollout engine: (texts, lengths, finish reasons)."""
    prompt_ids = [tokenizer(row["prompt"])["input_ids"] for row in rows]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    rollout = generate_rollout(
        model, prompt_ids, group_size, params, pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    return rollout.decode_completions(tokenizer), rollout.completion_lengths.tolist(), rollout.finish_reasons


def sampled_accuracy(model, tokenizer, rows: list[dict[str, str]], seed: int = 0, max_new_tokens: int = 8,
                     first_line: bool = False) -> float:
    """Mean exact-match accuracy of one temperature-1 sample per prompt (cohort's rollout engine);
    ``first_line``: only the completion's first line is compared (the long writer's reward)."""
    texts, _, _ = sample_completions(model, tokenizer, rows, seed=seed, max_new_tokens=max_new_tokens)
    if first_line:
        texts = [text.split("\n", 1)[0] for text in texts]
    return sum(text.strip() == row["answer"] for text, row in zip(texts, rows)) / len(rows)


def _sft_step(model, optimizer, scheduler, batch, tail: torch.Tensor | None = None) -> float:
    """One AdamW step on the batch's next-token loss (clipped at norm 1). ``tail`` ([B, L] bool, the
    label positions after the first line): the loss is then the mean over the first-line tokens plus
    the mean over the tail tokens, so that a long tail does not drown out the answer."""
    ids, targets, mask = batch
    if tail is None:
        loss = model(input_ids=ids, attention_mask=mask, labels=targets).loss
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # [B, L-1, V]
        labels, in_tail = targets[:, 1:], tail[:, 1:]  # position t predicts token t+1
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        head = (labels != -100) & ~in_tail  # [B, L-1]
        loss = losses[head].mean() + losses[in_tail].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach())


def warm_start(model, tokenizer, recipe: ModelRecipe, log=print) -> dict[str, float]:
    """SFT on arithmetic problems until sampled accuracy reaches the recipe's target (or its step cap);
    the long writer learns ``answer + "\\n"`` (no EOS) this way first, then its long tails (:func:`long_tail_stage`)."""
    long_writer = isinstance(recipe, LongWriterRecipe)
    train, _ = arithmetic_splits(seed=recipe.seed, num_train=recipe.sft_batch * recipe.sft_max_steps, num_test=0)
    probe, _ = arithmetic_splits(seed=recipe.seed + 1, num_train=256, num_test=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.sft_lr, betas=recipe.betas, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup_steps))
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    accuracy, step = 0.0, 0
    model.train()
    for step in range(1, recipe.sft_max_steps + 1):
        rows = train[(step - 1) * recipe.sft_batch : step * recipe.sft_batch]
        targets = [row["answer"] + "\n" for row in rows] if long_writer else None
        loss = _sft_step(model, optimizer, warmup, _sft_batch(tokenizer, rows, targets, eos=not long_writer))
        if step % recipe.check_every == 0:
            model.eval()
            accuracy = sampled_accuracy(model, tokenizer, probe, seed=step, first_line=long_writer)
            model.train()
            log(f"  sft step {step}: loss {loss:.3f}, sampled accuracy {accuracy:.3f} "
                f"({time.perf_counter() - started:.0f} s)")
            if accuracy >= recipe.target_accuracy:
                break
    summary = {"sft_steps": step, "sft_seconds": time.perf_counter() - started, "sampled_accuracy": accuracy}
    if long_writer:
        summary.update(long_tail_stage(model, tokenizer, recipe, log=log))
    model.eval()
    return summary


def long_tail_stage(model, tokenizer, recipe: LongWriterRecipe, log=print) -> dict[str, float]:
    """Stage 2 of the long writer: SFT on ``answer + "\\n" + filler * k + <eos>``, k ~ U{0..tail_max}, the
    rows of each batch drawn with similar k (sorted, cut into batches, batches shuffled) so little is
    padded; the first line and the tail weigh equally in the loss (:func:`_sft_step`)."""
    rng = random.Random(f"cohort-bench/{recipe.name}/long-tails/{recipe.seed}")
    count = recipe.long_steps * recipe.long_batch
    rows, _ = arithmetic_splits(seed=recipe.seed + 2, num_train=count, num_test=0)
    lengths = sorted(rng.randint(0, recipe.tail_max) for _ in range(count))
    batches = [list(range(i, i + recipe.long_batch)) for i in range(0, count, recipe.long_batch)]
    rng.shuffle(batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.long_lr, betas=recipe.betas, weight_decay=0.0)
    started = time.perf_counter()
    model.train()
    loss = float("nan")
    for step, batch in enumerate(batches, 1):
        members = [rows[i] for i in batch]
        heads = [len(tokenizer(row["prompt"] + row["answer"] + "\n", add_special_tokens=False)["input_ids"])
                 for row in members]
        ids, targets, mask = _sft_batch(tokenizer, members, [row["answer"] + "\n" + recipe.filler * lengths[i]
                                                             for row, i in zip(members, batch)])
        tail = torch.arange(ids.shape[1]).unsqueeze(0) >= torch.tensor(heads).unsqueeze(1)  # [B, L]
        loss = _sft_step(model, optimizer, None, (ids, targets, mask), tail=tail & (targets != -100))
        if step % 20 == 0 or step == len(batches):
            log(f"  long-tail sft step {step}/{len(batches)}: loss {loss:.4f} ({time.perf_counter() - started:.0f} s)")
    model.eval()
    probe, _ = arithmetic_splits(seed=recipe.seed + 1, num_train=256, num_test=0)
    accuracy = sampled_accuracy(model, tokenizer, probe, seed=1, first_line=True)
    return {"long_steps": len(batches), "long_seconds": time.perf_counter() - started, "sampled_accuracy": accuracy}


def length_profile(model, tokenizer, budgets: Sequence[int], prompts: int = 32, group_size: int = 8, seed: int = 0
                   ) -> dict[str, dict[str, float]]:
    """Completion lengths (tokens, EOS included) and first-line reward of ``prompts`` x ``group_size``
    temperature-1 samples at each budget: min / median / mean / max, the share truncated at the budget,
    the mean reward and the share of groups whose rewards are all equal."""
    rows, _ = arithmetic_splits(seed=seed + 3, num_train=prompts, num_test=0)
    reward = FirstLineMatch()
    profile = {}
    for budget in budgets:
        texts, lengths, reasons = sample_completions(model, tokenizer, rows, seed=seed, max_new_tokens=budget,
                                                     group_size=group_size)
        answers = [row["answer"] for row in rows for _ in range(group_size)]
        scores = reward(None, texts, answer=answers)
        groups = [scores[i : i + group_size] for i in range(0, len(scores), group_size)]
        profile[str(budget)] = {
            "min": min(lengths), "median": statistics.median(lengths), "mean": statistics.fmean(lengths),
            "max": max(lengths), "truncated_frac": sum(r == "length" for r in reasons) / len(reasons),
            "reward_mean": statistics.fmean(scores),
            "zero_std_group_frac": sum(len(set(g)) == 1 for g in groups) / len(groups),
        }
    return profile


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@contextlib.contextmanager
def _build_lock(directory: Path, log=print, partial_wait_s: float = 1800.0):
    """Hold ``<directory>.lock`` while a model is built, so two processes never build it twice (the
    second waits, then finds it built). Also waits for a ``.partial`` directory another builder is writing."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.with_name(directory.name + ".partial")
    if partial.exists() and not (directory / "bench_model.json").is_file():  # a builder without the lock (older code)
        log(f"  waiting for another process to finish {partial} ...")
        deadline = time.monotonic() + partial_wait_s
        while partial.exists() and not (directory / "bench_model.json").is_file() and time.monotonic() < deadline:
            time.sleep(5)
    with open(directory.with_name(directory.name + ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"  another process is building {directory}; waiting for it ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def model_directory(size: str, cache_dir: Path | None = None) -> Path:
    """Where the stand-in model ``size`` is (or will be) cached."""
    return (cache_dir or default_cache_dir()) / f"{size}-v{RECIPES[size].cache_version}"


def prepare_model(size: str, cache_dir: Path | None = None, log=print) -> Path:
    """A model directory for ``size`` ("tiny", "small" or "long"): the demo model, or the cached warm-started stand-in."""
    if size not in SIZES:
        raise ValueError(f"model size must be one of {SIZES}, got {size!r}")
    if size == "tiny":
        return Path(BUILTIN_MODELS["demo"])
    recipe = RECIPES[size]
    directory = model_directory(size, cache_dir)
    if (directory / "bench_model.json").is_file():
        return directory
    with _build_lock(directory, log=log):
        if (directory / "bench_model.json").is_file():  # another process built it while this one waited
            return directory
        log(f"building the {size} stand-in model (random init + SFT warm start) into {directory} ...")
        torch.set_num_threads(max(1, torch.get_num_threads()))
        tokenizer = build_char_tokenizer(recipe_characters(recipe))
        model = build_random_model(recipe, tokenizer)
        summary = warm_start(model, tokenizer, recipe, log=log)
        info: dict[str, Any] = {"recipe": asdict(recipe), "parameters": parameter_count(model),
                                "torch_threads": torch.get_num_threads(), **summary}
        if isinstance(recipe, LongWriterRecipe):
            info["length_profile"] = length_profile(model, tokenizer, recipe.probe_budgets)
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "bench_model.json").write_text(json.dumps(info, indent=2))
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    seconds = summary["sft_seconds"] + summary.get("long_seconds", 0.0)
    log(f"  {size}: {info['parameters'] / 1e6:.2f} M parameters, {summary['sft_steps']} SFT steps "
        + (f"+ {summary['long_steps']} long-tail steps " if "long_steps" in summary else "")
        + f"in {seconds:.0f} s, sampled accuracy {summary['sampled_accuracy']:.2f}")
    for budget, stats in info.get("length_profile", {}).items():
        log(f"  completion lengths at a {budget}-token budget: min {stats['min']}, median {stats['median']:.0f}, "
            f"mean {stats['mean']:.1f}, max {stats['max']} ({100 * stats['truncated_frac']:.0f}% truncated); "
            f"reward mean {stats['reward_mean']:.3f}, groups with all-equal rewards {100 * stats['zero_std_group_frac']:.0f}%")
    return directory


def model_info(path: str | Path) -> dict[str, Any]:
    """The ``bench_model.json`` of a built stand-in model ({} for other models)."""
    file = Path(path) / "bench_model.json"
    return json.loads(file.read_text()) if file.is_file() else {}
