"""Small character-level Llama models, built from scratch and SFT'd: what the scripts that build
cohort's bundled models (``build_demo_model.py``, ``build_multistep_model.py``) have in common.

A build makes a tokenizer with one token per character plus ``<pad>`` / ``<eos>`` / ``<unk>``, a
randomly initialised tiny Llama with tied embeddings sized for it, trains it with AdamW SFT (loss on
the completion and EOS only) until greedy accuracy on a fixed sample of *training* problems reaches
a target (early on purpose, so that the model is only partly capable), measures it on held-out
problems and saves it with its tokenizer. What differs between the models is passed in: the
characters and how to split text into them and the sizes (``Architecture``), the SFT schedule
(``Sft``), the data, how the answer is read from a completion, and the model card.

Not part of the cohort package: the scripts next to this file import it (they put this folder on
``sys.path``, so that loading a script by path, as the tests do, finds it too). Every step is
seeded and ``start`` turns on deterministic algorithms, so a rebuild on the same machine writes the
same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ASSETS_DIR = Path(__file__).resolve().parents[1] / "src" / "cohort" / "assets"
"""Where the bundled models live (each script's default --output-dir is a folder in it)."""

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
"""Ids 0, 1 and 2 of every tokenizer built here; there is no BOS."""


@dataclass(frozen=True)
class Architecture:
    """The tokenizer and the model: what a build fixes before training (the model card quotes it)."""

    characters: tuple[str, ...]
    """The vocabulary after the special tokens, one token per character, in id order."""
    split_pattern: str
    """Regex whose every match the pre-tokenizer isolates: it must match exactly one character."""
    max_new_tokens: int
    """Generation budget, written into generation_config.json and used in every evaluation."""
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int


@dataclass(frozen=True)
class Sft:
    """The SFT schedule (the model card quotes it)."""

    batch_size: int
    learning_rate: float
    warmup_steps: int
    """Linear warm-up from ``learning_rate / warmup_steps``, then constant."""
    check_every: int
    """Steps between two checks of the stopping rule."""
    num_check_problems: int
    """Size of the fixed sample of training problems the stopping rule looks at."""
    target_train_accuracy: float
    """Default of --target-train-accuracy: the stopping rule's threshold."""
    max_steps: int
    """Default of --max-steps: the build fails rather than train longer."""


@dataclass
class Build:
    """A build under way: its options, its tokenizer and model, and when it started."""

    args: argparse.Namespace
    tokenizer: PreTrainedTokenizerFast
    model: LlamaForCausalLM
    parameters: int
    started: float
    """``time.perf_counter()`` when the build started (before the model was made)."""


def build_tokenizer(architecture: Architecture) -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per character of the architecture, plus pad / eos / unk; no BOS.

    Without a BOS token, ``tokenizer(prompt)`` gives the same ids with or without special tokens.
    Padding is on the left, the side generation needs.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + architecture.characters)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(architecture.split_pattern), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=architecture.max_positions,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, architecture: Architecture, seed: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (tied embeddings) sized for the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=architecture.hidden_size,
        intermediate_size=architecture.intermediate_size,
        num_hidden_layers=architecture.num_layers,
        num_attention_heads=architecture.num_heads,
        num_key_value_heads=architecture.num_heads,
        max_position_embeddings=architecture.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.max_new_tokens = architecture.max_new_tokens
    return model


def sft_batch(
    tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, object]], target: str = "answer"
) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + row[target] + <eos>`` sequences; labels are -100 except on the target and EOS.

    A row's optional ``masked`` character spans of the target (a deliberately wrong result) get no
    loss either; the tokenizer has one token per character, so character offsets are token offsets.
    """
    prompt_ids = tokenizer([row["prompt"] for row in rows], add_special_tokens=False)["input_ids"]
    target_ids = tokenizer([row[target] for row in rows], add_special_tokens=False)["input_ids"]
    sequences = [p + t + [tokenizer.eos_token_id] for p, t in zip(prompt_ids, target_ids)]
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)  # [B, T]
    labels = torch.full((len(rows), length), -100)  # [B, T]
    for i, (prompt, sequence, row) in enumerate(zip(prompt_ids, sequences, rows)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt) : len(sequence)] = torch.tensor(sequence[len(prompt) :])
        for start, end in row.get("masked", ()):
            labels[i, len(prompt) + start : len(prompt) + end] = -100
    return {"input_ids": input_ids, "attention_mask": input_ids != tokenizer.pad_token_id, "labels": labels}


@torch.no_grad()
def complete(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    rows: list[dict[str, str]],
    num_samples: int = 0,
    seed: int = 0,
    chunk_size: int | None = None,
) -> list[str]:
    """Completions of the rows' prompts: one greedy each when ``num_samples`` is 0, else that many at T=1.

    Returned row-major (the samples of a prompt are adjacent), special tokens removed; at most the
    model's ``generation_config.max_new_tokens`` new tokens each. Prompts go to ``generate()``
    ``chunk_size`` at a time (bounds memory), all at once when it is None.
    """
    was_training = model.training
    model.eval()
    if num_samples:
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_return_sequences": num_samples}
    else:
        sampling = {"do_sample": False}
    max_new_tokens = model.generation_config.max_new_tokens
    chunk_size = chunk_size or max(len(rows), 1)
    completions: list[str] = []
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        encoded = tokenizer(
            [row["prompt"] for row in chunk],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
            return_token_type_ids=False,
        )  # input_ids [b, Lp]; transformers 4.x tokenizers also return token_type_ids, which generate() rejects
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, **sampling)  # [b*n, Lp + T_new]
        completions += tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return completions


def accuracy(rows: list[dict[str, str]], completions: list[str], read_answer: Callable[[str], str]) -> float:
    """Share of completions whose answer (``read_answer(completion)``) equals their row's answer.

    ``completions`` is row-major with the same number for every row (see ``complete``).
    """
    repeats = len(completions) // len(rows)
    return sum(read_answer(text) == rows[i // repeats]["answer"] for i, text in enumerate(completions)) / len(completions)


def parse_args(
    doc: str, argv: list[str] | None, sft: Sft, output_dir: Path, threads_help: str
) -> argparse.Namespace:
    """The options every build script takes (described by the first paragraph of ``doc``); checks the target."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=output_dir)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-train-accuracy", type=float, default=sft.target_train_accuracy)
    parser.add_argument("--max-steps", type=int, default=sft.max_steps)
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    args = parser.parse_args(argv)
    if not 0.0 < args.target_train_accuracy <= 1.0:
        parser.error(f"--target-train-accuracy must be in (0, 1], got {args.target_train_accuracy}")
    return args


def start(architecture: Architecture, args: argparse.Namespace) -> Build:
    """Fix the CPU threads and turn on deterministic algorithms (so a rebuild gives the same bytes),
    then make the tokenizer and the seeded model.
    """
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    tokenizer = build_tokenizer(architecture)
    model = build_model(tokenizer, architecture, args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"LlamaForCausalLM with {parameters:,} parameters")
    return Build(args, tokenizer, model, parameters, started)


def train_sft(
    build: Build,
    stream: Iterator[dict[str, object]],
    check: Callable[[], float],
    sft: Sft,
    target: str = "answer",
    check_name: str = "greedy accuracy",
) -> tuple[int, float]:
    """AdamW SFT on ``stream`` until ``check()`` reaches --target-train-accuracy; at most --max-steps steps.

    ``check()`` measures the model on a fixed sample of training problems, never on held-out ones
    (``check_name`` says what, in the progress lines); ``target`` names the rows' field to learn
    (see ``sft_batch``). Returns ``(steps, train_accuracy)``. Stopping early on purpose leaves the
    model partly capable.
    """
    model, target_train_accuracy, max_steps = build.model, build.args.target_train_accuracy, build.args.max_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / sft.warmup_steps))
    model.train()
    train_accuracy = 0.0
    for step in range(1, max_steps + 1):
        batch = sft_batch(build.tokenizer, list(itertools.islice(stream, sft.batch_size)), target)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % sft.check_every == 0:
            train_accuracy = check()
            print(f"step {step:5d}  loss {loss.item():.4f}  {check_name} on training sample {train_accuracy:.3f}")
            if train_accuracy >= target_train_accuracy:
                return step, train_accuracy
    raise RuntimeError(
        f"SFT did not reach training accuracy {target_train_accuracy} within {max_steps} steps "
        f"(last {train_accuracy:.3f}); raise --max-steps"
    )


def evaluate(
    build: Build, rows: list[dict[str, str]], read_answer: Callable[[str], str], num_samples: int, chunk_size: int | None = None
) -> tuple[dict[str, object], list[str], list[str]]:
    """Held-out accuracy for the model card: greedy, and sampled pass@1 at T=1 (``num_samples`` a problem).

    Returns the facts ``num_test``, ``greedy`` and ``sampled``, and the greedy and the sampled
    completions (for further statistics). Sampling is seeded with the build's seed.
    """
    greedy = complete(build.model, build.tokenizer, rows, chunk_size=chunk_size)
    sampled = complete(build.model, build.tokenizer, rows, num_samples, build.args.seed, chunk_size)
    facts = {"num_test": len(rows), "greedy": accuracy(rows, greedy, read_answer), "sampled": accuracy(rows, sampled, read_answer)}
    print(f"held-out ({len(rows)} problems): greedy {facts['greedy']:.3f}, sampled pass@1 (T=1) {facts['sampled']:.3f}")
    return facts, greedy, sampled


def save(build: Build, script: str, argv: list[str] | None) -> dict[str, object]:
    """Write the weights, config.json, generation_config.json and the tokenizer files to --output-dir.

    Returns the facts every model card quotes: ``parameters``, ``seed``, ``target``, ``threads``
    and ``command``, the command that rebuilds the model (``python scripts/<script's name>`` and
    the arguments given: ``argv``, or the command line's when it is None).
    """
    args = build.args
    args.output_dir.mkdir(parents=True, exist_ok=True)
    build.model.save_pretrained(args.output_dir)
    save_tokenizer(build.tokenizer, args.output_dir)
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(part) for part in ["python", f"scripts/{Path(script).name}", *arguments])
    return {
        "parameters": build.parameters,
        "seed": args.seed,
        "target": args.target_train_accuracy,
        "threads": args.threads,
        "command": command,
    }


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, output_dir: Path) -> None:
    """Save the tokenizer under the class name every transformers release knows.

    transformers 5 records its new ``TokenizersBackend`` class, which 4.x cannot load;
    ``PreTrainedTokenizerFast`` names the same class in 5.x and loads in 4.x too.
    """
    tokenizer.save_pretrained(output_dir)
    config_path = output_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def folder_size(path: Path) -> int:
    """Total bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def architecture_row(architecture: Architecture) -> str:
    """The model card's ``| architecture | ... |`` table row."""
    a = architecture
    return (
        f"| architecture | `LlamaForCausalLM`, hidden {a.hidden_size}, {a.num_layers} layers, {a.num_heads} heads, "
        f"MLP {a.intermediate_size}, tied embeddings, RoPE, max {a.max_positions} positions |"
    )


def rebuild_section(command: str) -> str:
    """The end of the model card: the command that rebuilds the model, and what to expect of it."""
    return f"""Rebuild with:

```
{command}
```

The build is seeded and uses deterministic algorithms: rerunning it on the same machine gives the
same weights. Other CPUs or library versions may round differently and stop at another step.
"""
