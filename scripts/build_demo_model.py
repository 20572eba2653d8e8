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

import itertools
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from cohort.data.arithmetic import arithmetic_splits, iter_problems

# char_llama.py sits next to this file: on the path when this file is run, not when it is loaded by path (the tests).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import char_llama
from char_llama import sft_batch  # noqa: F401  (tests/data/test_arithmetic.py checks the labels through it)

DEFAULT_OUTPUT_DIR = char_llama.ASSETS_DIR / "demo_model"

MODEL = char_llama.Architecture(
    characters=tuple("0123456789+-="),
    split_pattern=".",
    max_new_tokens=8,  # answers are at most 3 digits + EOS
    hidden_size=96, num_layers=3, num_heads=3, intermediate_size=384, max_positions=64,  # head size 32: vLLM's CPU build has no kernel for 24
)
SFT = char_llama.Sft(
    batch_size=128, learning_rate=3e-3, warmup_steps=50, check_every=25, num_check_problems=500,
    target_train_accuracy=0.45, max_steps=1500,
)
EVAL_SAMPLES = 4


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The demo model's tokenizer: one token per digit or operator, plus pad / eos / unk; no BOS; left padding."""
    return char_llama.build_tokenizer(MODEL)


def model_card(facts: dict[str, object]) -> str:
    """The README.md written next to the weights."""
    return f"""# cohort demo model

A tiny character-level causal LM that ships with cohort so that `cohort train` with no arguments
has something to train. It is deliberately *partly* capable at the built-in arithmetic task
(`cohort.data.arithmetic`: `a+b=` and larger-first `a-b=` with 0 <= a, b <= 99), so that groups of
sampled answers mix right and wrong ones and GRPO has a signal to learn from.

| | |
|---|---|
{char_llama.architecture_row(MODEL)}
| parameters | {facts["parameters"]:,} (float32) |
| tokenizer | one token per character of `{"".join(MODEL.characters)}`, plus `<pad>` (0), `<eos>` (1), `<unk>` (2); no BOS; left padding |
| format | prompt `47+85=`, completion `132<eos>` |
| data | training split of `cohort.data.arithmetic` (the held-out split is never trained on) |
| SFT | from random init (seed {facts["seed"]}), AdamW lr {SFT.learning_rate}, betas (0.9, 0.98), {SFT.warmup_steps} warm-up steps, batch {SFT.batch_size}, loss on answer + EOS only; stopped at the first check (every {SFT.check_every} steps) where greedy accuracy on {SFT.num_check_problems} training problems reached {facts["target"]} |
| steps | {facts["steps"]} (greedy accuracy on the training sample {facts["train_accuracy"]:.3f}) |
| held-out greedy accuracy | {facts["greedy"]:.3f} ({facts["num_test"]} problems, `arithmetic_splits(seed=0)`) |
| held-out sampled pass@1, T=1.0 | {facts["sampled"]:.3f} (mean of {EVAL_SAMPLES} samples per problem) |
| build time | {facts["seconds"]:.0f} s on {facts["threads"]} CPU thread(s), torch {torch.__version__} |

{char_llama.rebuild_section(facts["command"])}"""


def main(argv: list[str] | None = None) -> None:
    threads_help = "CPU threads; fixed so the run is reproducible (1 and 2 gave identical weights)"
    args = char_llama.parse_args(__doc__, argv, SFT, DEFAULT_OUTPUT_DIR, threads_help)
    build = char_llama.start(MODEL, args)
    stream = iter_problems("train", seed=args.seed)
    check_rows = list(itertools.islice(iter_problems("train", seed=args.seed + 1), SFT.num_check_problems))

    # A completion is right when, with special tokens removed and whitespace stripped, it is the
    # row's answer (the project's default reward).
    def check() -> float:
        return char_llama.accuracy(check_rows, char_llama.complete(build.model, build.tokenizer, check_rows), str.strip)

    steps, train_accuracy = char_llama.train_sft(build, stream, check, SFT)
    seconds = time.perf_counter() - build.started
    _, test = arithmetic_splits(seed=0, num_train=0)
    facts, _, _ = char_llama.evaluate(build, test, str.strip, EVAL_SAMPLES)

    facts |= char_llama.save(build, __file__, argv)
    facts |= {"steps": steps, "train_accuracy": train_accuracy, "seconds": seconds}
    (args.output_dir / "README.md").write_text(model_card(facts))
    print(f"wrote {args.output_dir} ({char_llama.folder_size(args.output_dir) / 1e6:.2f} MB) in {seconds:.0f} s of training")


if __name__ == "__main__":
    main()
