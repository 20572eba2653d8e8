"""Build the multi-step model that ships with cohort: a character tokenizer and a tiny Llama, SFT'd
to write the built-in multi-step task's worked solutions (one operation per line) until it is
*partly* capable, so that outcome and process supervision both have room and signal.

Run from the repository root (CPU, a few minutes, deterministic on a given machine):

    .venv/bin/python scripts/build_multistep_model.py

It writes ``src/cohort/assets/multistep_model/``: ``model.safetensors``, ``config.json``,
``generation_config.json``, the tokenizer files and a ``README.md`` model card with the measured
accuracies. SFT stops once greedy final-answer accuracy on a fixed sample of *training* problems
reaches ``--target-train-accuracy``; held-out problems are only used for the numbers in the card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cohort.data.multistep import (
    MAX_OPERATIONS,
    MAX_RESULT,
    MIN_OPERATIONS,
    check_steps,
    final_answer,
    first_error,
    iter_problems,
    split_problems,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT_DIR = REPO_ROOT / "src" / "cohort" / "assets" / "multistep_model"

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHARACTERS = tuple("0123456789+-=\n")
MAX_NEW_TOKENS = 48
"""Generation budget written into generation_config.json (gold solutions are at most 35 characters
+ EOS; the slack lets a wrong completion add a line)."""

HIDDEN_SIZE = 96
NUM_LAYERS = 4
NUM_HEADS = 4
INTERMEDIATE_SIZE = 384
MAX_POSITIONS = 128
"""The longest prompt (15 characters) plus MAX_NEW_TOKENS fits with room to spare; RoPE has no
position parameters, so this costs nothing."""

BATCH_SIZE = 64
LEARNING_RATE = 3e-3
WARMUP_STEPS = 50
MAX_STEPS = 3000
CORRUPT_PROBABILITY = 0.25
CORRUPT_MAX_OFFSET = 10
CHECK_EVERY = 25
NUM_CHECK_PROBLEMS = 256
EVAL_SAMPLES = 4
GENERATE_CHUNK = 1024
"""Prompts per generate() call in evaluation (bounds memory; results do not depend on it)."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per digit, operator, ``=`` or newline, plus pad / eos / unk; no BOS.

    The pre-tokenizer isolates every character, newlines included (``[\\s\\S]``; ``.`` would
    leave runs of newlines as one unknown piece). Without a BOS token, ``tokenizer(prompt)``
    gives the same ids with or without special tokens. Padding is on the left, the side
    generation needs.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
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


def corrupt(row: dict[str, str], rng: random.Random) -> dict[str, object]:
    """The row for SFT, with probability CORRUPT_PROBABILITY given one wrong intermediate result.

    The wrong result (off by 1..CORRUPT_MAX_OFFSET) is carried on faithfully: the later lines
    compute from it, so the model learns that a line's result follows from the line written
    before it, not from the prompt alone (otherwise it learns to write the right answer after
    wrong steps, and step correctness would say little about the outcome). The wrong result's
    characters are listed in ``masked`` (offsets into ``solution``) and get no loss: the model
    never learns to make the error, only to continue from one.
    """
    lines = row["solution"].split("\n")
    if rng.random() >= CORRUPT_PROBABILITY:
        return {**row, "masked": []}
    for _ in range(10):  # a few tries to keep every later result in 0..MAX_RESULT
        k = rng.randrange(len(lines))
        running = int(lines[k].rsplit("=", 1)[1]) + rng.choice((-1, 1)) * rng.randint(1, CORRUPT_MAX_OFFSET)
        new_lines, ok = lines[:k] + [lines[k].rsplit("=", 1)[0] + f"={running}"], 0 <= running <= MAX_RESULT
        for line in lines[k + 1 :]:
            operator = "+" if "+" in line else "-"
            operand = int(line.split("=")[0].split(operator)[1])
            result = running + operand if operator == "+" else running - operand
            new_lines.append(f"{running}{operator}{operand}={result}")
            ok, running = ok and 0 <= result <= MAX_RESULT, result
        if ok:
            end = sum(len(line) + 1 for line in new_lines[: k + 1]) - 1
            return {**row, "solution": "\n".join(new_lines), "masked": [(end - len(new_lines[k].rsplit("=", 1)[1]), end)]}
    return {**row, "masked": []}


def sft_batch(tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, object]]) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + solution + <eos>`` sequences; labels are -100 except on solution and EOS.

    The ``masked`` character spans of a solution (a deliberately wrong result) get no loss either;
    the tokenizer has one token per character, so character offsets are token offsets.
    """
    prompt_ids = tokenizer([row["prompt"] for row in rows], add_special_tokens=False)["input_ids"]
    solution_ids = tokenizer([row["solution"] for row in rows], add_special_tokens=False)["input_ids"]
    sequences = [p + s + [tokenizer.eos_token_id] for p, s in zip(prompt_ids, solution_ids)]
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)  # [B, T]
    labels = torch.full((len(rows), length), -100)  # [B, T]
    for i, (prompt, sequence, row) in enumerate(zip(prompt_ids, sequences, rows)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt) : len(sequence)] = torch.tensor(sequence[len(prompt) :])
        for start, end in row["masked"]:
            labels[i, len(prompt) + start : len(prompt) + end] = -100
    return {"input_ids": input_ids, "attention_mask": input_ids != tokenizer.pad_token_id, "labels": labels}


@torch.no_grad()
def complete(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    rows: list[dict[str, str]],
    num_samples: int = 0,
    seed: int = 0,
) -> list[str]:
    """Completions of the rows' prompts: one greedy each when ``num_samples`` is 0, else that many at T=1.

    Returned row-major (the samples of a prompt are adjacent), special tokens removed.
    """
    was_training = model.training
    model.eval()
    if num_samples:
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_return_sequences": num_samples}
    else:
        sampling = {"do_sample": False}
    completions: list[str] = []
    for start in range(0, len(rows), GENERATE_CHUNK):
        chunk = rows[start : start + GENERATE_CHUNK]
        encoded = tokenizer(
            [row["prompt"] for row in chunk],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
            return_token_type_ids=False,
        )  # input_ids [b, Lp]; transformers 4.x tokenizers also return token_type_ids, which generate() rejects
        output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS, **sampling)  # [b*n, Lp + T_new]
        completions += tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return completions


def answer_accuracy(rows: list[dict[str, str]], completions: list[str]) -> float:
    """Share of completions whose final answer equals their row's answer (rows repeat for samples)."""
    repeats = len(completions) // len(rows)
    return sum(final_answer(text) == rows[i // repeats]["answer"] for i, text in enumerate(completions)) / len(completions)


def step_statistics(rows: list[dict[str, str]], completions: list[str]) -> dict[str, float]:
    """Gold-checker statistics of the completions, for the model card.

    ``step_accuracy``: share of all step lines that ``check_steps`` accepts. ``first_error_*``:
    among completions with a wrong final answer, where the first wrong step is (1, 2, 3 or later;
    a missing last step counts at its position). ``wrong_step_count``: share of wrong completions
    with more or fewer steps than the problem has operations. ``right_with_wrong_step``: share of
    right completions with at least one wrong step (the right answer for a wrong reason).
    ``mean_steps_*``: mean number of steps of right and of wrong completions.
    """
    repeats = len(completions) // len(rows)
    verdicts, positions, miscounted, unsound, right_lengths, wrong_lengths = [], [], 0, 0, [], []
    for i, text in enumerate(completions):
        row = rows[i // repeats]
        row_verdicts = check_steps(row["prompt"], text)
        verdicts += row_verdicts
        steps = len(row_verdicts)
        if final_answer(text) == row["answer"]:
            right_lengths.append(steps)
            unsound += not all(row_verdicts)
            continue
        wrong_lengths.append(steps)
        positions.append(first_error(row["prompt"], text) or 0)
        miscounted += steps != row["solution"].count("\n") + 1
    wrong = max(len(positions), 1)
    return {
        "step_accuracy": sum(verdicts) / max(len(verdicts), 1),
        "first_error_1": sum(p == 1 for p in positions) / wrong,
        "first_error_2": sum(p == 2 for p in positions) / wrong,
        "first_error_3+": sum(p >= 3 for p in positions) / wrong,
        "wrong_step_count": miscounted / wrong,
        "right_with_wrong_step": unsound / max(len(right_lengths), 1),
        "mean_steps_right": statistics.fmean(right_lengths) if right_lengths else 0.0,
        "mean_steps_wrong": statistics.fmean(wrong_lengths) if wrong_lengths else 0.0,
    }


def train_sft(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    target_train_accuracy: float,
    max_steps: int,
) -> tuple[int, float]:
    """AdamW SFT on the training stream until greedy final-answer accuracy on a fixed training sample reaches the target.

    Returns ``(steps, train_accuracy)``. Stopping early on purpose leaves the model partly
    capable; the stopping rule looks at training problems only, never at held-out ones.
    """
    rng = random.Random(f"cohort-multistep-sft/{seed}")
    stream = (corrupt(row, rng) for row in iter_problems("train", seed=seed))
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
            train_accuracy = answer_accuracy(check_rows, complete(model, tokenizer, check_rows))
            print(f"step {step:5d}  loss {loss.item():.4f}  greedy final-answer accuracy on training sample {train_accuracy:.3f}")
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
    s = facts["stats"]
    return f"""# cohort multi-step model

A tiny character-level causal LM that ships with cohort for the built-in multi-step task
(`cohort.data.multistep`: chains of {MIN_OPERATIONS} to {MAX_OPERATIONS} additions / subtractions of numbers 0..{MAX_RESULT}, worked one
operation per line). It is deliberately *partly* capable, with errors at every step position, so
that sampled groups mix right and wrong answers (outcome supervision has a signal) and wrong
answers have a first wrong step to find (process supervision has one too).

| | |
|---|---|
| architecture | `LlamaForCausalLM`, hidden {HIDDEN_SIZE}, {NUM_LAYERS} layers, {NUM_HEADS} heads, MLP {INTERMEDIATE_SIZE}, tied embeddings, RoPE, max {MAX_POSITIONS} positions |
| parameters | {facts["parameters"]:,} (float32) |
| tokenizer | one token per character of `0123456789+-=` and newline, plus `<pad>` (0), `<eos>` (1), `<unk>` (2); no BOS; left padding |
| format | prompt `12+7-5+30=`, completion `12+7=19\\n19-5=14\\n14+30=44<eos>`: one step per line, the running result carried to the next line, the answer is the last line's result |
| data | training split of `cohort.data.multistep` (the held-out split is never trained on) |
| SFT | from random init (seed {facts["seed"]}), AdamW lr {LEARNING_RATE}, betas (0.9, 0.98), {WARMUP_STEPS} warm-up steps, batch {BATCH_SIZE}, loss on the worked solution + EOS only; in {CORRUPT_PROBABILITY:.0%} of the examples one result is off by 1..{CORRUPT_MAX_OFFSET} (no loss on it) and the later lines carry it on, so that results follow from the lines written before them; stopped at the first check (every {CHECK_EVERY} steps) where greedy final-answer accuracy on {NUM_CHECK_PROBLEMS} training problems reached {facts["target"]} |
| steps | {facts["steps"]} (greedy accuracy on the training sample {facts["train_accuracy"]:.3f}) |
| held-out greedy accuracy | {facts["greedy"]:.3f} ({facts["num_test"]} problems, `split_problems("test")`, final answer) |
| held-out sampled pass@1, T=1.0 | {facts["sampled"]:.3f} (mean of {EVAL_SAMPLES} samples per problem) |
| mean step accuracy (sampled) | {s["step_accuracy"]:.3f} of all step lines pass `check_steps` (greedy: {facts["greedy_stats"]["step_accuracy"]:.3f}) |
| first error of wrong sampled completions | step 1: {s["first_error_1"]:.3f}, step 2: {s["first_error_2"]:.3f}, step 3 or later: {s["first_error_3+"]:.3f} (`first_error`) |
| wrong sampled completions with a missing or extra step | {s["wrong_step_count"]:.3f} |
| right sampled completions with a wrong step | {s["right_with_wrong_step"]:.3f} (the right answer for a wrong reason) |
| mean steps of sampled completions | right {s["mean_steps_right"]:.2f}, wrong {s["mean_steps_wrong"]:.2f} |
| build time | {facts["seconds"]:.0f} s (SFT {facts["train_seconds"]:.0f} s, the rest evaluation) on {facts["threads"]} CPU thread(s), torch {torch.__version__} |

Rebuild with:

```
{facts["command"]}
```

The build is seeded and uses deterministic algorithms: rerunning it on the same machine gives the
same weights. Other CPUs or library versions may round differently and stop at another step.
"""


def evaluate(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int) -> dict[str, object]:
    """Held-out numbers for the model card: greedy and sampled accuracy, gold step statistics."""
    test = split_problems("test")
    greedy_completions = complete(model, tokenizer, test)
    sampled_completions = complete(model, tokenizer, test, num_samples=EVAL_SAMPLES, seed=seed)
    facts = {
        "num_test": len(test),
        "greedy": answer_accuracy(test, greedy_completions),
        "sampled": answer_accuracy(test, sampled_completions),
        "greedy_stats": step_statistics(test, greedy_completions),
        "stats": step_statistics(test, sampled_completions),
    }
    print(f"held-out ({len(test)} problems): greedy {facts['greedy']:.3f}, sampled pass@1 (T=1) {facts['sampled']:.3f}")
    print(f"sampled step statistics: {facts['stats']}")
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-train-accuracy", type=float, default=0.5)
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads; fixed so the run is reproducible")
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
    train_seconds = time.perf_counter() - started
    facts = evaluate(model, tokenizer, args.seed)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output_dir)
    save_tokenizer(tokenizer, args.output_dir)
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(part) for part in ["python", "scripts/build_multistep_model.py", *arguments])
    facts |= {
        "parameters": parameters,
        "seed": args.seed,
        "target": args.target_train_accuracy,
        "steps": steps,
        "train_accuracy": train_accuracy,
        "train_seconds": train_seconds,
        "threads": args.threads,
        "command": command,
    }
    facts["seconds"] = time.perf_counter() - started
    (args.output_dir / "README.md").write_text(model_card(facts))
    print(f"wrote {args.output_dir} ({folder_size(args.output_dir) / 1e6:.2f} MB) in {facts['seconds']:.0f} s")


if __name__ == "__main__":
    main()
