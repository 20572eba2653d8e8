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

import itertools
import random
import statistics
import sys
import time
from pathlib import Path

import torch

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

# char_llama.py sits next to this file: on the path when this file is run, not when it is loaded by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import char_llama

DEFAULT_OUTPUT_DIR = char_llama.ASSETS_DIR / "multistep_model"

MODEL = char_llama.Architecture(
    characters=tuple("0123456789+-=\n"),
    # Isolate every character, newlines included: "." would leave runs of newlines as one unknown piece.
    split_pattern=r"[\s\S]",
    # Gold solutions are at most 35 characters + EOS; the slack lets a wrong completion add a line.
    max_new_tokens=48,
    # max_positions: the longest prompt (15 characters) plus max_new_tokens fits with room to spare;
    # RoPE has no position parameters, so this costs nothing.
    hidden_size=96, num_layers=4, num_heads=4, intermediate_size=384, max_positions=128,
)
SFT = char_llama.Sft(
    batch_size=64, learning_rate=3e-3, warmup_steps=50, check_every=25, num_check_problems=256,
    target_train_accuracy=0.5, max_steps=3000,
)
CORRUPT_PROBABILITY = 0.25
CORRUPT_MAX_OFFSET = 10
EVAL_SAMPLES = 4
GENERATE_CHUNK = 1024
"""Prompts per generate() call in evaluation (bounds memory; results do not depend on it)."""


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
{char_llama.architecture_row(MODEL)}
| parameters | {facts["parameters"]:,} (float32) |
| tokenizer | one token per character of `0123456789+-=` and newline, plus `<pad>` (0), `<eos>` (1), `<unk>` (2); no BOS; left padding |
| format | prompt `12+7-5+30=`, completion `12+7=19\\n19-5=14\\n14+30=44<eos>`: one step per line, the running result carried to the next line, the answer is the last line's result |
| data | training split of `cohort.data.multistep` (the held-out split is never trained on) |
| SFT | from random init (seed {facts["seed"]}), AdamW lr {SFT.learning_rate}, betas (0.9, 0.98), {SFT.warmup_steps} warm-up steps, batch {SFT.batch_size}, loss on the worked solution + EOS only; in {CORRUPT_PROBABILITY:.0%} of the examples one result is off by 1..{CORRUPT_MAX_OFFSET} (no loss on it) and the later lines carry it on, so that results follow from the lines written before them; stopped at the first check (every {SFT.check_every} steps) where greedy final-answer accuracy on {SFT.num_check_problems} training problems reached {facts["target"]} |
| steps | {facts["steps"]} (greedy accuracy on the training sample {facts["train_accuracy"]:.3f}) |
| held-out greedy accuracy | {facts["greedy"]:.3f} ({facts["num_test"]} problems, `split_problems("test")`, final answer) |
| held-out sampled pass@1, T=1.0 | {facts["sampled"]:.3f} (mean of {EVAL_SAMPLES} samples per problem) |
| mean step accuracy (sampled) | {s["step_accuracy"]:.3f} of all step lines pass `check_steps` (greedy: {facts["greedy_stats"]["step_accuracy"]:.3f}) |
| first error of wrong sampled completions | step 1: {s["first_error_1"]:.3f}, step 2: {s["first_error_2"]:.3f}, step 3 or later: {s["first_error_3+"]:.3f} (`first_error`) |
| wrong sampled completions with a missing or extra step | {s["wrong_step_count"]:.3f} |
| right sampled completions with a wrong step | {s["right_with_wrong_step"]:.3f} (the right answer for a wrong reason) |
| mean steps of sampled completions | right {s["mean_steps_right"]:.2f}, wrong {s["mean_steps_wrong"]:.2f} |
| build time | {facts["seconds"]:.0f} s (SFT {facts["train_seconds"]:.0f} s, the rest evaluation) on {facts["threads"]} CPU thread(s), torch {torch.__version__} |

{char_llama.rebuild_section(facts["command"])}"""


def main(argv: list[str] | None = None) -> None:
    args = char_llama.parse_args(__doc__, argv, SFT, DEFAULT_OUTPUT_DIR, "CPU threads; fixed so the run is reproducible")
    build = char_llama.start(MODEL, args)
    # Trained on partly corrupted worked solutions (see corrupt); checked on clean training problems.
    rng = random.Random(f"cohort-multistep-sft/{args.seed}")
    stream = (corrupt(row, rng) for row in iter_problems("train", seed=args.seed))
    check_rows = list(itertools.islice(iter_problems("train", seed=args.seed + 1), SFT.num_check_problems))

    def check() -> float:
        completions = char_llama.complete(build.model, build.tokenizer, check_rows, chunk_size=GENERATE_CHUNK)
        return char_llama.accuracy(check_rows, completions, final_answer)

    steps, train_accuracy = char_llama.train_sft(
        build, stream, check, SFT, target="solution", check_name="greedy final-answer accuracy"
    )
    train_seconds = time.perf_counter() - build.started

    test = split_problems("test")
    facts, greedy, sampled = char_llama.evaluate(build, test, final_answer, EVAL_SAMPLES, GENERATE_CHUNK)
    facts |= {"greedy_stats": step_statistics(test, greedy), "stats": step_statistics(test, sampled)}
    print(f"sampled step statistics: {facts['stats']}")

    facts |= char_llama.save(build, __file__, argv)
    facts |= {"steps": steps, "train_accuracy": train_accuracy, "train_seconds": train_seconds}
    facts["seconds"] = time.perf_counter() - build.started
    (args.output_dir / "README.md").write_text(model_card(facts))
    print(f"wrote {args.output_dir} ({char_llama.folder_size(args.output_dir) / 1e6:.2f} MB) in {facts['seconds']:.0f} s")


if __name__ == "__main__":
    main()
