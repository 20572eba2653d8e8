"""The training half of ``build_reward_models.py``: fit the PRM and the ORM on the labelled data,
measure them (held-out within-group AUC, the gold checker's view, the spread over training seeds),
and write each asset's deterministic ``training.json`` and ``README.md`` card.

Not part of the cohort package: ``build_reward_models.py`` imports it from this folder.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from cohort.reward_training import OutcomeExample, train_outcome_model, train_process_model

VOLATILE = ("seconds", "out_dir", "loss_curve", "history")
"""Report fields left out of the shipped training.json: timings and paths differ between rebuilds."""


def _options(recipe, seed: int) -> dict[str, Any]:
    return {"lr": recipe.lr, "batch_size": recipe.batch_size, "epochs": recipe.epochs, "patience": recipe.patience,
            "seed": seed, "device": "cpu", "eval_before": seed == 0}


def _train_prm(recipe, base: str, train, held, out: Path, seed: int):
    prompts, _, _, labelling = train
    held_prompts, _, _, held_labelling, _ = held
    return train_process_model(labelling.process_examples(prompts, soft=True), base, out,
                               held_out=held_labelling.process_examples(held_prompts, soft=True), **_options(recipe, seed))


def _train_orm(recipe, base: str, train, held, out: Path):
    prompts, completions, _, labelling = train
    held_prompts, held_completions, _, held_labelling, _ = held
    examples = [OutcomeExample(p, c, float(item.correct)) for p, c, item in zip(prompts, completions, labelling.labels)]
    held_examples = [OutcomeExample(p, c, float(item.correct)) for p, c, item in zip(held_prompts, held_completions, held_labelling.labels)]
    return train_outcome_model(examples, base, out, held_out=held_examples, **_options(recipe, 0))


def _write_report(out: Path, report, extra: dict[str, Any]) -> dict[str, Any]:
    data = {key: value for key, value in report.to_dict().items() if key not in VOLATILE}
    data["init"] = "builtin:multistep"
    data["options"] = {k: v for k, v in data["options"].items() if k not in ("device", "threads")}
    data.update(extra)
    (out / "training.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def build_both(args, recipe, base: str, train, held, facts: dict[str, Any], *, agreement: Callable, gold_view: Callable) -> None:
    """Train, measure and write the PRM and the ORM (see the module docstring)."""
    held_prompts, held_completions, _, held_labelling, at_four = held
    correct = [item.correct for item in held_labelling.labels]
    labels = {"rollouts": recipe.mc_rollouts, "soft": True,
              f"agreement_n{recipe.mc_rollouts}": agreement(held_prompts, held_completions, held_labelling),
              "agreement_n4": agreement(held_prompts, held_completions, at_four)}
    prm_dir = args.output_dir / "multistep_prm"
    started = time.perf_counter()
    prm = _train_prm(recipe, base, train, held, prm_dir, seed=0)
    spread = []
    for seed in range(1, recipe.spread_seeds + 1):
        other = _train_prm(recipe, base, train, held, args.output_dir / f".prm-seed-{seed}", seed=seed)
        spread.append({"seed": seed, "within_group_auc": other.held_out.within_group_auc, "best_epoch": other.best_epoch,
                       **gold_view(args.output_dir / f".prm-seed-{seed}", held_prompts, held_completions, correct)})
    values = [prm.held_out.within_group_auc] + [s["within_group_auc"] for s in spread]
    seed_spread = {"seeds": spread, "within_group_auc_mean": statistics.fmean(values),
                   "within_group_auc_sd": statistics.stdev(values) if len(values) > 1 else None}
    prm_facts = {"labels": labels, "seed_spread": seed_spread, "gold_view": gold_view(prm_dir, held_prompts, held_completions, correct),
                 "build": facts}
    prm_data = _write_report(prm_dir, prm, prm_facts)
    orm_dir = args.output_dir / "multistep_orm"
    orm = _train_orm(recipe, base, train, held, orm_dir)
    orm_data = _write_report(orm_dir, orm, {"build": facts})
    seconds = time.perf_counter() - started
    (prm_dir / "README.md").write_text(card("process", prm_data, seconds))
    (orm_dir / "README.md").write_text(card("outcome", orm_data, seconds))
    for seed in range(1, recipe.spread_seeds + 1):
        for path in sorted((args.output_dir / f".prm-seed-{seed}").glob("*")):
            path.unlink()
        (args.output_dir / f".prm-seed-{seed}").rmdir()


def _n(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _held(data: dict[str, Any], key: str) -> str:
    return f"{_n((data.get('held_out_before') or {}).get(key))} -> {_n((data.get('held_out') or {}).get(key))}"


def card(kind: str, data: dict[str, Any], seconds: float) -> str:
    """The README.md written next to the weights: what the model is, how it was made, what it reaches."""
    recipe, build = data["build"]["recipe"], data["build"]
    rows = [
        "| | |", "|---|---|",
        f"| base | `builtin:multistep` (0.59 M parameters), a new single-logit head, all weights trained |",
        f"| data | {data['train_examples']} labelled completions: one policy sample for each of {recipe['train_prompts']} training "
        f"prompts (half 4-operation) + hard negatives ({', '.join(f'{n} {k}' for k, n in build['hard_negatives'].items())}) |",
        f"| labels | {'soft Monte-Carlo step labels, N = ' + str(recipe['mc_rollouts']) + ' continuations per prefix, judged by the task rule' if kind == 'process' else 'the task rule (right answer in the task format)'} |",
        f"| training | AdamW lr {recipe['lr']}, batch {recipe['batch_size']}, up to {recipe['epochs']} epochs, early stopping "
        f"(patience {recipe['patience']}) on held-out within-group AUC; kept epoch {data['best_epoch']} |",
        f"| held out | {data['held_out_examples']} completions: {recipe['held_out_prompts']} other 4-operation training prompts x "
        f"{recipe['group']} samples |",
        f"| **within-group AUC** (before -> after) | {_held(data, 'within_group_auc')} |",
        f"| pooled accuracy / majority class / pooled AUC | {_held(data, 'accuracy')} / {_n(data['held_out']['majority_accuracy'])} / {_held(data, 'auc')} |",
    ]
    if kind == "process":
        per_step = ", ".join(_n(v) for v in data["held_out"]["per_step_within_group_auc"])
        gold, labels, spread = data["gold_view"], data["labels"], data["seed_spread"]
        rows += [
            f"| within-group AUC per step index (MC labels) | {per_step} |",
            f"| against the gold checker | weakest step vs right answer {_n(gold['within_group_auc_rule'])}, vs fully correct chain "
            f"{_n(gold['within_group_auc_fully_correct'])}; per step vs gold prefix "
            f"{', '.join(_n(v) for v in gold['per_step_within_group_auc_gold_prefix'])} |",
            f"| MC labels vs gold prefix correctness | N = {labels['rollouts']}: {_n(labels['agreement_n' + str(labels['rollouts'])]['agreement'])}; "
            f"N = 4: {_n(labels['agreement_n4']['agreement'])} |",
            f"| spread over training seeds | within-group AUC mean {_n(spread['within_group_auc_mean'])}, sd {_n(spread['within_group_auc_sd'])} "
            f"({len(spread['seeds']) + 1} seeds) |",
        ]
    cost = build["labelling_cost"]
    rows.append(f"| labelling cost | {cost['rollouts']:,} continuations ({cost['generated_tokens']:,} tokens) for {cost['prefixes']:,} prefixes |")
    rows.append(f"| training and measuring time | {seconds / 60:.1f} min (both models, 1 CPU thread) |")
    name = "multistep_prm" if kind == "process" else "multistep_orm"
    return f"""# cohort multi-step {'process' if kind == 'process' else 'outcome'} reward model (`builtin:{name}`)

{'A token-classification PRM: it scores each step of a multi-step completion at the newline after it (a probability, the sigmoid of its logit).' if kind == 'process' else 'A sequence-classification ORM: one score per completion.'}
Built by `scripts/build_reward_models.py` for `cohort reproduce`; `training.json` holds every number below.

{chr(10).join(rows)}

Rebuild with `python scripts/build_reward_models.py` (seeded, deterministic algorithms, one thread: the same weights on
the same machine and library versions).
"""
