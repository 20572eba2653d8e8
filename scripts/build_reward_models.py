"""Build the reward models that ship with cohort for the built-in multi-step task: a process reward
model trained on Math-Shepherd Monte-Carlo step labels and an outcome reward model trained on the
task's rule, both from the bundled multi-step model (``builtin:multistep``).

Run from the repository root (CPU; deterministic on a given machine and library versions):

    .venv/bin/python scripts/build_reward_models.py            # the shipped models (about 40 min here)
    .venv/bin/python scripts/build_reward_models.py --quick --output-dir /tmp/rm   # the same code path, small

It writes ``src/cohort/assets/multistep_prm/`` and ``multistep_orm/``: the weights, config, tokenizer,
``training.json`` (the held-out numbers the quality gate reads, without timings or paths, so a
rebuild writes the same bytes) and a ``README.md`` card. The data: one sample of the policy for each
of many training prompts (half of them 4-operation problems), plus hard negatives (the task's
worked solutions with one mistake the policy makes: a wrong result, a wrong carry, merged lines, a
skipped step), every step labelled by the fraction of N policy continuations from its prefix that
reach the right answer under the task's rule (soft Monte-Carlo labels). Held out: whole groups of G
samples of other training prompts (4 operations), labelled the same way and by the gold checker.
Training: several epochs with early stopping on the held-out within-group AUC.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cohort.assets import resolve_builtin
from cohort.data.multistep import HARD_NEGATIVES, check_steps, hard_negative, prefix_correct, split_problems
from cohort.models.loading import load_policy, load_tokenizer
from cohort.models.prompts import encode_prompts
from cohort.reward_training import OutcomeExample, ProcessExample, train_outcome_model, train_process_model
from cohort.reward_training.labels import monte_carlo_step_labels
from cohort.reward_training.metrics import within_group_auc
from cohort.rewards.multistep import FinalAnswerReward
from cohort.rollout import SamplingParams, generate_rollout

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reward_model_card  # noqa: E402  (next to this file)

ASSETS = Path(__file__).resolve().parents[1] / "src" / "cohort" / "assets"


@dataclass(frozen=True)
class Recipe:
    """The data and training of one build (the card quotes it)."""

    train_prompts: int  # one policy sample each
    hard_negative_share: float  # hard negatives added, as a share of the policy samples
    held_out_prompts: int  # 4-operation prompts, `group` samples each
    group: int
    mc_rollouts: int  # N continuations per step prefix
    lr: float
    batch_size: int
    epochs: int
    patience: int
    spread_seeds: int  # extra PRM trainings (other seeds, same data) to measure the seed-to-seed spread


FULL = Recipe(train_prompts=12_000, hard_negative_share=0.5, held_out_prompts=256, group=8, mc_rollouts=8, lr=3e-4,
              batch_size=32, epochs=10, patience=3, spread_seeds=1)
QUICK = Recipe(train_prompts=256, hard_negative_share=0.5, held_out_prompts=16, group=4, mc_rollouts=2, lr=3e-4,
               batch_size=32, epochs=2, patience=1, spread_seeds=1)
BASE = "builtin:multistep"
MAX_NEW_TOKENS = 48


def sample(policy, tokenizer, prompts: list[str], group: int, seed: int) -> list[str]:
    """``group`` completions of the policy for each prompt at T = 1, in chunks (prompt-major order)."""
    params = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    completions, generator = [], torch.Generator().manual_seed(seed)
    for start in range(0, len(prompts), 1024):
        rollout = generate_rollout(policy, encode_prompts(tokenizer, prompts[start : start + 1024]), group, params,
                                   pad_token_id=tokenizer.pad_token_id, generator=generator, tokenizer=tokenizer)
        completions += rollout.decode_completions(tokenizer)
    return completions


def label(policy, tokenizer, prompts: list[str], completions: list[str], answers: list[str], rollouts: int, seed: int):
    """Monte-Carlo step labels of each completion (the task's rule judges the continuations)."""
    params = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, eos_token_ids=(tokenizer.eos_token_id,))
    return monte_carlo_step_labels(policy, tokenizer, prompts, completions, answers, FinalAnswerReward(), rollouts=rollouts,
                                   params=params, generator=torch.Generator().manual_seed(seed), columns={"answer": answers},
                                   max_prefixes_per_batch=256)


def training_data(policy, tokenizer, recipe: Recipe, rng: random.Random):
    """Policy samples of training prompts (half 4-operation) plus hard negatives; their prompts, texts and answers."""
    held = {row["prompt"] for row in split_problems("train", 4)[: recipe.held_out_prompts]}
    pool = [r for r in split_problems("train", 4)[recipe.held_out_prompts :] if r["prompt"] not in held]
    mixed = [r for r in split_problems("train") if r["prompt"] not in held]
    rows = pool[: recipe.train_prompts // 2] + mixed[: recipe.train_prompts - recipe.train_prompts // 2]
    completions = sample(policy, tokenizer, [r["prompt"] for r in rows], 1, seed=101)
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    kinds = {kind: 0 for kind in HARD_NEGATIVES}
    for row in rng.sample(rows, int(recipe.hard_negative_share * len(rows))):
        kind = rng.choice(HARD_NEGATIVES)
        text = hard_negative(row["prompt"], kind, rng)
        if text is not None:
            prompts.append(row["prompt"]), completions.append(text), answers.append(row["answer"])
            kinds[kind] += 1
    return prompts, completions, answers, kinds


def agreement(prompts: list[str], completions: list[str], labelling) -> dict[str, object]:
    """How often hard Monte-Carlo labels (any continuation right) agree with gold prefix correctness,
    over the sampled prefixes (every step but a completion's last), overall and per step index."""
    cells: dict[int, list[int]] = {}  # step -> [true pos, false neg, false pos, true neg]
    for prompt, text, item in zip(prompts, completions, labelling.labels):
        gold = prefix_correct(prompt, text)
        for k, (mc, truth) in enumerate(zip(item.hard[:-1], gold[:-1])):
            cell = cells.setdefault(k + 1, [0, 0, 0, 0])
            cell[(0 if mc else 1) if truth else (2 if mc else 3)] += 1
    total = [sum(c[i] for c in cells.values()) for i in range(4)]
    per_step = {str(k): {"prefixes": sum(c), "false_negative_rate": c[1] / max(1, c[0] + c[1]),
                         "false_positive_rate": c[2] / max(1, c[2] + c[3])} for k, c in sorted(cells.items())}
    return {"agreement": (total[0] + total[3]) / max(1, sum(total)), "prefixes": sum(total), "per_step": per_step}


def held_out_set(policy, tokenizer, recipe: Recipe):
    """Groups of samples of held-out 4-operation training prompts, MC-labelled at N and at 4."""
    rows = split_problems("train", 4)[: recipe.held_out_prompts]
    prompts = [r["prompt"] for r in rows for _ in range(recipe.group)]
    answers = [r["answer"] for r in rows for _ in range(recipe.group)]
    completions = sample(policy, tokenizer, [r["prompt"] for r in rows], recipe.group, seed=202)
    labelled = label(policy, tokenizer, prompts, completions, answers, recipe.mc_rollouts, seed=303)
    at_four = label(policy, tokenizer, prompts, completions, answers, 4, seed=404)
    return prompts, completions, answers, labelled, at_four


def gold_view(model_dir: Path, prompts: list[str], completions: list[str], correct: list[bool]) -> dict[str, object]:
    """The trained PRM against the truth on the held-out groups: within-group AUC of its weakest step
    against the rule and against a fully correct chain, and per step index against gold prefixes."""
    from cohort.rewards.process_model import ProcessRewardModel

    tokenizer = load_tokenizer(resolve_builtin(BASE))
    prm = ProcessRewardModel(str(model_dir), tokenizer, device="cpu", batch_size=64)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]
    scores = [s.rewards for s in prm(prompts, completions, ids)]
    kept = [i for i, s in enumerate(scores) if s]
    fully = [all(check_steps(prompts[i], completions[i])) and correct[i] for i in range(len(prompts))]
    per_step = []
    for k in range(4):
        rows = [i for i in kept if len(scores[i]) > k]
        per_step.append(within_group_auc([scores[i][k] for i in rows], [prefix_correct(prompts[i], completions[i])[k] for i in rows],
                                         [prompts[i] for i in rows])[0])
    weakest = [min(scores[i]) for i in kept]
    return {"within_group_auc_rule": within_group_auc(weakest, [correct[i] for i in kept], [prompts[i] for i in kept])[0],
            "within_group_auc_fully_correct": within_group_auc(weakest, [fully[i] for i in kept], [prompts[i] for i in kept])[0],
            "per_step_within_group_auc_gold_prefix": per_step}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=ASSETS, help="where multistep_prm/ and multistep_orm/ go")
    parser.add_argument("--quick", action="store_true", help="a small build through the same code path (minutes)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads; fixed so the build is reproducible")
    args = parser.parse_args(argv)
    recipe = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    base = resolve_builtin(BASE)
    policy, tokenizer = load_policy(base), load_tokenizer(base)
    rng = random.Random(0)
    prompts, completions, answers, kinds = training_data(policy, tokenizer, recipe, rng)
    print(f"labelling {len(completions)} training completions ({kinds} hard negatives), N = {recipe.mc_rollouts}", flush=True)
    labelling = label(policy, tokenizer, prompts, completions, answers, recipe.mc_rollouts, seed=505)
    held = held_out_set(policy, tokenizer, recipe)
    cost = {k: v for k, v in labelling.cost.to_dict().items() if "seconds" not in k and k != "per_completion"}
    facts = {"recipe": recipe.__dict__, "hard_negatives": kinds, "labelling_cost": cost}
    print(f"labelled in {(time.perf_counter() - started) / 60:.1f} min: {cost}", flush=True)
    reward_model_card.build_both(args, recipe, base, (prompts, completions, answers, labelling), held, facts,
                                 agreement=agreement, gold_view=gold_view)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
