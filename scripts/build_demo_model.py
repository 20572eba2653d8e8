"""Build the small model that ships with cohort: a character tokenizer and a tiny Llama, SFT'd on
the built-in arithmetic task until it is *partly* capable, so that GRPO has room and signal.

Run from the repository root (CPU, a few minutes, deterministic on a given machine):

    .venv/bin/python scripts/build_demo_model.py

It writes ``src/cohort/assets/demo_model/``: ``model.safetensors``, ``config.json``,
``generation_config.json``, the tokenizer files and a ``README.md`` model card with the measured
accuracies. SFT stops once greedy accuracy on a fixed sample of *training* problems reaches
``--target-train-accuracy``; held-out problems are only used for the numbers in the card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cohort.data.arithmetic import arithmetic_splits, iter_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT_DIR = REPO_ROOT / "src" / "cohort" / "assets" / "demo_model"

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHARACTERS = tuple("0123456789+-=")
MAX_NEW_TOKENS = 8
"""Generation budget written into generation_config.json (answers are at most 3 digits + EOS)."""

HIDDEN_SIZE = 96
NUM_LAYERS = 3
NUM_HEADS = 4
INTERMEDIATE_SIZE = 384
MAX_POSITIONS = 64

BATCH_SIZE = 128
LEARNING_RATE = 3e-3
WARMUP_STEPS = 50
MAX_STEPS = 1500
CHECK_EVERY = 25
NUM_CHECK_PROBLEMS = 500
EVAL_SAMPLES = 4


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per digit or operator, plus pad / eos / unk; no BOS.

    Without a BOS token, ``tokenizer(prompt)`` gives the same ids with or without special tokens.
    Padding is on the left, the side generation needs.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (tied embeddings) sized for the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
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
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model


def sft_batch(tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + answer + <eos>`` sequences; labels are -100 except on answer and EOS."""
    prompt_ids = tokenizer([row["prompt"] for row in rows], add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer([row["answer"] for row in rows], add_special_tokens=False)["input_ids"]
    sequences = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompt_ids, answer_ids)]
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)  # [B, T]
    labels = torch.full((len(rows), length), -100)  # [B, T]
    for i, (prompt, sequence) in enumerate(zip(prompt_ids, sequences)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt) : len(sequence)] = torch.tensor(sequence[len(prompt) :])
    return {"input_ids": input_ids, "attention_mask": input_ids != tokenizer.pad_token_id, "labels": labels}


@torch.no_grad()
def accuracy(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    rows: list[dict[str, str]],
    num_samples: int = 0,
    seed: int = 0,
) -> float:
    """Exact-match accuracy: greedy when ``num_samples`` is 0, else mean over that many samples at T=1.

    A completion is correct when, with special tokens removed and whitespace stripped, it equals
    the row's answer (the project's default reward).
    """
    was_training = model.training
    model.eval()
    encoded = tokenizer(
        [row["prompt"] for row in rows], return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
    )  # transformers 4.x tokenizers also return token_type_ids, which generate() rejects
    if num_samples:
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_return_sequences": num_samples}
    else:
        sampling = {"do_sample": False}
    output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS, **sampling)  # [B*n, T_prompt + T_new]
    completions = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    repeats = max(num_samples, 1)
    correct = sum(text.strip() == rows[i // repeats]["answer"] for i, text in enumerate(completions))
    model.train(was_training)
    return correct / len(completions)


def train_sft(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    target_train_accuracy: float,
    max_steps: int,
) -> tuple[int, float]:
    """AdamW SFT on the training stream until greedy accuracy on a fixed training sample reaches the target.

    Returns ``(steps, train_accuracy)``. Stopping early on purpose leaves the model partly
    capable; the stopping rule looks at training problems only, never at held-out ones.
    """
    stream = iter_problems("train", seed=seed)
    check_rows = list(itertools.islice(iter_problems("train", seed=seed + 1), NUM_CHECK_PROBLEMS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.98), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    model.train()
    train_accuracy = 0.0
    for step in range(1, max_steps + 1):
        batch = sft_batch(tokenizer, list(itertools.islice(stream, BATCH_SIZE)))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % CHECK_EVERY == 0:
            train_accuracy = accuracy(model, tokenizer, check_rows)
            print(f"step {step:5d}  loss {loss.item():.4f}  greedy accuracy on training sample {train_accuracy:.3f}")
            if train_accuracy >= target_train_accuracy:
                return step, train_accuracy
    raise RuntimeError(
        f"SFT did not reach training accuracy {target_train_accuracy} within {max_steps} steps "
        f"(last {train_accuracy:.3f}); raise --max-steps"
    )


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


def model_card(facts: dict[str, object]) -> str:
    """The README.md written next to the weights."""
    return f"""# cohort demo model

A tiny character-level causal LM that ships with cohort so that `cohort train` with no arguments
has something to train. It is deliberately *partly* capable at the built-in arithmetic task
(`cohort.data.arithmetic`: `a+b=` and larger-first `a-b=` with 0 <= a, b <= 99), so that groups of
sampled answers mix right and wrong ones and GRPO has a signal to learn from.

| | |
|---|---|
| architecture | `LlamaForCausalLM`, hidden {HIDDEN_SIZE}, {NUM_LAYERS} layers, {NUM_HEADS} heads, MLP {INTERMEDIATE_SIZE}, tied embeddings, RoPE, max {MAX_POSITIONS} positions |
| parameters | {facts["parameters"]:,} (float32) |
| tokenizer | one token per character of `{"".join(CHARACTERS)}`, plus `<pad>` (0), `<eos>` (1), `<unk>` (2); no BOS; left padding |
| format | prompt `47+85=`, completion `132<eos>` |
| data | training split of `cohort.data.arithmetic` (the held-out split is never trained on) |
| SFT | from random init (seed {facts["seed"]}), AdamW lr {LEARNING_RATE}, betas (0.9, 0.98), {WARMUP_STEPS} warm-up steps, batch {BATCH_SIZE}, loss on answer + EOS only; stopped at the first check (every {CHECK_EVERY} steps) where greedy accuracy on {NUM_CHECK_PROBLEMS} training problems reached {facts["target"]} |
| steps | {facts["steps"]} (greedy accuracy on the training sample {facts["train_accuracy"]:.3f}) |
| held-out greedy accuracy | {facts["greedy"]:.3f} ({facts["num_test"]} problems, `arithmetic_splits(seed=0)`) |
| held-out sampled pass@1, T=1.0 | {facts["sampled"]:.3f} (mean of {EVAL_SAMPLES} samples per problem) |
| build time | {facts["seconds"]:.0f} s on {facts["threads"]} CPU thread(s), torch {torch.__version__} |

Rebuild with:

```
{facts["command"]}
```

The build is seeded and uses deterministic algorithms: rerunning it on the same machine gives the
same weights. Other CPUs or library versions may round differently and stop at another step.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-train-accuracy", type=float, default=0.45)
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads; fixed so the run is reproducible (1 and 2 gave identical weights)"
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.target_train_accuracy <= 1.0:
        parser.error(f"--target-train-accuracy must be in (0, 1], got {args.target_train_accuracy}")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"LlamaForCausalLM with {parameters:,} parameters")
    steps, train_accuracy = train_sft(model, tokenizer, args.seed, args.target_train_accuracy, args.max_steps)
    seconds = time.perf_counter() - started

    _, test = arithmetic_splits(seed=0, num_train=0)
    greedy = accuracy(model, tokenizer, test)
    sampled = accuracy(model, tokenizer, test, num_samples=EVAL_SAMPLES, seed=args.seed)
    print(f"held-out ({len(test)} problems): greedy {greedy:.3f}, sampled pass@1 (T=1) {sampled:.3f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output_dir)
    save_tokenizer(tokenizer, args.output_dir)
    command = " ".join(shlex.quote(part) for part in ["python", "scripts/build_demo_model.py", *(sys.argv[1:] if argv is None else argv)])
    facts = {
        "parameters": parameters,
        "seed": args.seed,
        "target": args.target_train_accuracy,
        "steps": steps,
        "train_accuracy": train_accuracy,
        "greedy": greedy,
        "sampled": sampled,
        "num_test": len(test),
        "seconds": seconds,
        "threads": args.threads,
        "command": command,
    }
    (args.output_dir / "README.md").write_text(model_card(facts))
    print(f"wrote {args.output_dir} ({folder_size(args.output_dir) / 1e6:.2f} MB) in {seconds:.0f} s of training")


if __name__ == "__main__":
    main()
