#!/usr/bin/env python
"""Full fine-tuning against LoRA with cohort's GRPO: peak memory, step time, held-out accuracy.

Why: LoRA (``model.lora``) is meant to cut the memory of an RL run -- no gradients and no AdamW
state for the frozen base, and at beta > 0 no second copy of the model as the KL reference (the
reference is the base with the adapters switched off) -- without losing what the run learns. This
script measures both claims on the same model, task, batch, steps and seeds.

What: it trains the 25.7 M-parameter stand-in Llama of ``bench_models.py`` (``prepare_model("small")``,
warm-started by SFT on arithmetic) on cohort's built-in arithmetic task (exact-match reward, preset
grpo, beta 0.04 by default), alternating full / LoRA / full / LoRA ... in fresh subprocesses, and
prints per side (medians over the repeats): median step time (step 1 excluded), peak RSS of the
run's process (``ru_maxrss`` from ``wait4``, as ``vs_trl.py`` measures it), RSS after the models are
loaded, trainable parameters, the bytes of weights / reference / gradients / AdamW state, the
reward of the last steps, and held-out greedy accuracy and sampled pass@1 before and after training
(the trainer's own ``eval_before.json`` / ``eval_after.json``). Peak memory does not depend on the
machine's load; step times do, so a last fresh process holds one trainer of each side and steps them
alternately (``--paired-steps``): both see the same load, and the ratio of their step times is the
number to trust on a shared machine.

Learning rates are common practice, not tuned here: full fine-tuning 3e-5 (what ``vs_trl.py`` uses
for this model), LoRA 10x that, 3e-4 (the usual LoRA-vs-full ratio). LoRA: r 16, alpha 32,
dropout 0, on every linear projection of attention and MLP (q/k/v/o, gate/up/down).

    python benchmarks/lora_vs_full.py                     # 30 steps, 32 x 8, 3 repeats per side
    python benchmarks/lora_vs_full.py --json lora.json    # also write every measurement
    python benchmarks/lora_vs_full.py --quick             # smoke run on a random-init model (< 1 min)

Needs PEFT: ``pip install -e .[lora]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_processes import (  # noqa: E402
    check_run_args,
    current_rss_bytes,
    peak_rss_so_far,
    run_measured,
)

SIDES = ("full", "lora")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MiB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="PATH",
                        help="a local HF causal LM directory (default: bench_models' small model)")
    parser.add_argument("--cache-dir", type=Path, help="where bench_models caches the warm-started small model")
    run = parser.add_argument_group("identical settings for both sides")
    run.add_argument("--steps", type=int, default=30, help="training steps per run (default 30)")
    run.add_argument("--prompts-per-step", type=int, default=32, help="P (default 32)")
    run.add_argument("--group-size", type=int, default=8, help="G, completions per prompt (default 8)")
    run.add_argument("--max-new-tokens", type=int, default=8, help="completion budget (default 8)")
    run.add_argument("--beta", type=float, default=0.04, help="KL coefficient (default 0.04: the reference is used)")
    run.add_argument("--micro-batch-size", type=int, default=64,
                     help="completions per forward/backward (default 64, cohort's)")
    run.add_argument("--seed", type=int, default=0, help="seed of the first repeat; repeat r uses seed + r")
    run.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    run.add_argument("--eval-limit", type=int, default=0,
                     help="held-out problems evaluated before and after (default 0: all 1,497; the first N in the "
                          "split's fixed order otherwise)")
    run.add_argument("--eval-samples", type=int, default=4, help="samples per held-out problem for pass@1 (default 4)")
    side = parser.add_argument_group("per side")
    side.add_argument("--full-lr", type=float, default=3e-5, help="full fine-tuning lr (default 3e-5)")
    side.add_argument("--lora-lr", type=float, default=3e-4, help="LoRA lr (default 3e-4, 10x full)")
    side.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    side.add_argument("--lora-alpha", type=float, default=32, help="LoRA alpha (default 32)")
    side.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    side.add_argument("--lora-targets", default=",".join(LORA_TARGETS), help="comma-separated module names")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--repeats", type=int, default=3, help="runs per side, alternating full/LoRA (default 3)")
    bench.add_argument("--paired-steps", type=int, default=10,
                       help="then step a full and a LoRA trainer alternately in one process this many times each, for "
                            "step times under the same load (default 10; 0 = off)")
    bench.add_argument("--last-steps", type=int, help="steps whose mean reward is reported (default: last quarter)")
    bench.add_argument("--keep-runs", type=Path, metavar="DIR", help="keep the run directories here (default: a temp dir)")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write every measurement to this JSON file")
    bench.add_argument("--quick", action="store_true",
                       help="smoke run: a shrunk random-init Llama, 4 steps, P=4, G=4, 20 held-out problems, 1 repeat")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.prompts_per_step, args.group_size, args.repeats = 4, 4, 4, 1
        args.eval_limit, args.eval_samples, args.micro_batch_size, args.paired_steps = 20, 2, 16, 3
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject settings that cannot give a comparison, naming the flag."""
    check_run_args(parser, args, ("steps", "prompts_per_step", "max_new_tokens", "repeats", "threads", "eval_samples",
                                  "lora_r", "micro_batch_size"))
    if args.paired_steps == 1 or args.paired_steps < 0:
        parser.error(f"--paired-steps must be 0 (off) or >= 2, got {args.paired_steps}")
    if args.eval_limit < 0 or args.beta < 0 or args.full_lr <= 0 or args.lora_lr <= 0:
        parser.error("--eval-limit and --beta must be >= 0, the learning rates > 0")
    args.last_steps = args.last_steps or max(1, args.steps // 4)
    if not 1 <= args.last_steps < args.steps:
        parser.error(f"--last-steps must be in 1..{args.steps - 1}, got {args.last_steps}")


# --- one run (in its own process) ---------------------------------------------------------------


def overrides(spec: dict[str, Any]) -> list[str]:
    """cohort config overrides of one run; the two sides differ only in model.lora and optim.lr."""
    lora = "null"
    if spec["side"] == "lora":
        targets = ", ".join(spec["lora_targets"])
        lora = (f"{{r: {spec['lora_r']}, alpha: {spec['lora_alpha']}, dropout: {spec['lora_dropout']}, "
                f"target_modules: [{targets}]}}")
    return [
        f"model.path={spec['model_path']}", "model.device=cpu", "model.dtype=float32", f"model.lora={lora}",
        "data.task=arithmetic", f"data.eval_limit={spec['eval_limit'] or 'null'}",
        f"rollout.group_size={spec['group_size']}", f"rollout.prompts_per_step={spec['prompts_per_step']}",
        f"rollout.max_new_tokens={spec['max_new_tokens']}", "rollout.temperature=1.0",
        "algorithm.preset=grpo", f"algorithm.beta={spec['beta']}",
        f"optim.lr={spec['lr']}", "optim.schedule=constant", "optim.warmup_steps=0", "optim.weight_decay=0.0",
        f"optim.micro_batch_size={spec['micro_batch_size']}",
        f"train.steps={spec['steps']}", f"train.seed={spec['seed']}", f"train.threads={spec['threads']}",
        f"train.out_dir={spec['out_dir']}", "train.overwrite=true", "train.save_every=0",
        f"train.eval_samples={spec['eval_samples']}",
        "log.console=quiet", "log.completions_every=0", "log.tensorboard=false", "log.report=false",
    ]


def tensor_bytes(tensors) -> int:
    """Bytes of distinct tensors (tied weights counted once)."""
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors if t is not None}.values())


def memory_accounting(trainer) -> dict[str, int]:
    """Where the model-state bytes live after training: policy weights, reference weights, gradients, AdamW state."""
    policy = list(trainer.policy.parameters())
    reference = list(trainer.reference.parameters()) if trainer.reference is not None else []
    state = [value for per_param in trainer.optimizer.state.values() for value in per_param.values()
             if hasattr(value, "numel")]
    trainable = [p for p in policy if p.requires_grad]
    return {
        "policy_weights": tensor_bytes(policy),
        "reference_weights": tensor_bytes(reference),
        "gradients_if_kept": tensor_bytes(trainable),  # allocated during backward, freed by zero_grad(set_to_none)
        "adamw_state": tensor_bytes(state),
    }


def run_steps(trainer, steps: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Train ``steps`` steps as Trainer.train does (no checkpoints); the step times and metrics."""
    records, ends = [], []
    started = time.perf_counter()
    while trainer.step < steps:
        metrics = trainer.train_step()
        trainer.writer.write_step(metrics)
        ends.append(time.perf_counter())
        records.append(metrics)
    step_s = [end - begin for begin, end in zip([started, *ends[:-1]], ends)]
    return step_s, records


def run_worker(spec_path: Path, result_path: Path) -> None:
    """One run: load, evaluate before, train, evaluate after; write the measurements as JSON."""
    import torch

    from cohort.config import load_config
    from cohort.training.trainer import Trainer

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    if spec["side"] == "paired":
        result_path.write_text(json.dumps(run_paired(spec)))
        return
    trainer = Trainer(load_config(None, overrides(spec)))
    rss_loaded = current_rss_bytes()
    trainable = {id(p): p for p in trainer.policy.parameters() if p.requires_grad}
    total = {id(p): p for p in trainer.policy.parameters()}
    trainer.evaluations.summary("before", {"step": 0})
    rss_before_train = current_rss_bytes()
    step_s, records = run_steps(trainer, spec["steps"])
    peak_training = peak_rss_so_far()
    rss_after_train = current_rss_bytes()
    accounting = memory_accounting(trainer)
    trainer.evaluations.summary("after", {"step": trainer.step})
    trainer.writer.close()
    run_dir = Path(spec["out_dir"])
    result = {
        "spec": spec,
        "trainable_params": sum(p.numel() for p in trainable.values()),
        "total_params": sum(p.numel() for p in total.values()),
        "rss_loaded": rss_loaded, "rss_before_train": rss_before_train, "rss_after_train": rss_after_train,
        "peak_rss_training": peak_training, "model_state_bytes": accounting,
        "step_s": step_s,
        "reward": [m["reward/mean"] for m in records],
        "kl": [m.get("kl", float("nan")) for m in records],
        "split": {name: [m[f"time/{name}_s"] for m in records] for name in ("rollout", "reward", "logprob", "train")},
        "eval_before": json.loads((run_dir / "eval_before.json").read_text()),
        "eval_after": json.loads((run_dir / "eval_after.json").read_text()),
    }
    result_path.write_text(json.dumps(result))


PHASES = ("rollout", "logprob", "train")


def run_paired(spec: dict[str, Any]) -> dict[str, Any]:
    """Step times of both sides under the same load: a full and a LoRA trainer in this one process, stepped
    alternately (full, LoRA, LoRA, full, ...), ``spec["steps"]`` steps each; no evaluation, no memory numbers."""
    from cohort.config import load_config
    from cohort.training.trainer import Trainer

    trainers = {run["side"]: Trainer(load_config(None, overrides(run))) for run in spec["runs"]}
    times: dict[str, dict[str, list[float]]] = {side: {key: [] for key in ("step", *PHASES)} for side in trainers}
    for index in range(spec["steps"]):
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            started = time.perf_counter()
            metrics = trainers[side].train_step()
            times[side]["step"].append(time.perf_counter() - started)
            for phase in PHASES:
                times[side][phase].append(metrics[f"time/{phase}_s"])
    return {"spec": {key: value for key, value in spec.items() if key != "runs"}, "times": times}


def paired_report(result: dict[str, Any], log=print) -> dict[str, Any]:
    """Medians of the paired step times (step 1 of each side excluded) and the per-pair ratio LoRA / full."""
    times = result["times"]
    medians = {side: {key: statistics.median(values[1:]) for key, values in times[side].items()} for side in SIDES}
    ratios = [lora / full for lora, full in zip(times["lora"]["step"][1:], times["full"]["step"][1:])]
    log("")
    log(f"paired step times: both trainers in one process, stepped alternately, {len(ratios) + 1} steps each "
        f"(medians, step 1 excluded; the same load for both)")
    log("")
    log("| seconds | full fine-tuning | LoRA | LoRA / full |")
    log("|---|---:|---:|---:|")
    labels = {"step": "step", "rollout": "rollout", "logprob": "reference log-probs", "train": "forward + backward + step"}
    for key, label in labels.items():
        full, lora = medians["full"][key], medians["lora"][key]
        log(f"| {label} | {full:.3f} | {lora:.3f} | {lora / full:.2f} |")
    log(f"per-pair step ratio LoRA / full: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}..{max(ratios):.2f})")
    return {"medians": medians, "step_ratio_median": statistics.median(ratios), "raw": times}


def run_paired_subprocess(args: argparse.Namespace, model_path: str, runs_dir: Path, log=print) -> dict[str, Any]:
    """The paired step-time measurement in a fresh process (seed ``args.seed``)."""
    runs = [make_spec(args, side, 0, model_path, runs_dir / "paired") for side in SIDES]
    spec = {"side": "paired", "seed": args.seed, "threads": args.threads, "steps": args.paired_steps, "runs": runs}
    log(f"  paired: full and LoRA in one process, {args.paired_steps} steps each, alternating ...", flush=True)
    return run_subprocess(spec, runs_dir, 2 * args.repeats)


# --- the driver ---------------------------------------------------------------------------------


def run_subprocess(spec: dict[str, Any], workdir: Path, index: int) -> dict[str, Any]:
    """Run one spec in a fresh Python process; its result plus the process's peak RSS (bytes)."""
    return run_measured(Path(__file__).resolve(), spec, workdir, index)


def make_spec(args: argparse.Namespace, side: str, repeat: int, model_path: str, runs_dir: Path) -> dict[str, Any]:
    """The settings of one run; the sides differ only in LoRA and the learning rate."""
    seed = args.seed + repeat
    return {
        "side": side, "model_path": model_path, "seed": seed, "out_dir": str(runs_dir / f"{side}-seed{seed}"),
        "lr": args.lora_lr if side == "lora" else args.full_lr,
        "steps": args.steps, "prompts_per_step": args.prompts_per_step, "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens, "beta": args.beta, "micro_batch_size": args.micro_batch_size,
        "threads": args.threads, "eval_limit": args.eval_limit, "eval_samples": args.eval_samples,
        "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
        "lora_targets": [name.strip() for name in args.lora_targets.split(",") if name.strip()],
    }


def run_all(args: argparse.Namespace, model_path: str, runs_dir: Path, log=print) -> list[dict[str, Any]]:
    """Alternate full and LoRA runs, ``args.repeats`` each, each in a fresh process."""
    results = []
    for repeat in range(args.repeats):
        for side in SIDES:
            spec = make_spec(args, side, repeat, model_path, runs_dir)
            log(f"  run {len(results) + 1}/{2 * args.repeats}: {side}, seed {spec['seed']}, lr {spec['lr']:g} ...",
                flush=True)
            started = time.perf_counter()
            result = run_subprocess(spec, runs_dir, len(results))
            result["wall_s"] = time.perf_counter() - started
            results.append(result)
            run = summarize_run(result, args.last_steps)
            log(f"    {result['wall_s']:.0f} s: median step {run['median_step_s']:.3f} s, "
                f"peak RSS {run['peak_rss_mib']:.0f} MiB, "
                f"reward (last {args.last_steps}) {run['reward_last']:.3f}, greedy acc {run['greedy_before']:.3f} -> "
                f"{run['greedy_after']:.3f}, pass@1 {run['pass1_before']:.3f} -> {run['pass1_after']:.3f}; "
                f"load {os.getloadavg()[0]:.2f}", flush=True)
    return results


def summarize_run(result: dict[str, Any], last_steps: int) -> dict[str, float]:
    """One run's headline numbers (step 1 excluded from the step time)."""
    state = result["model_state_bytes"]
    return {
        "median_step_s": statistics.median(result["step_s"][1:]),
        **{f"{phase}_s": statistics.median(values[1:]) for phase, values in result["split"].items()},
        "peak_rss_mib": result["peak_rss"] / MiB,
        "peak_rss_training_mib": result["peak_rss_training"] / MiB,
        "rss_loaded_mib": result["rss_loaded"] / MiB,
        "rss_after_train_mib": result["rss_after_train"] / MiB,
        **{f"{key}_mib": value / MiB for key, value in state.items()},
        "trainable_params": result["trainable_params"],
        "reward_first": statistics.fmean(result["reward"][:last_steps]),
        "reward_last": statistics.fmean(result["reward"][-last_steps:]),
        "kl_last": statistics.fmean(result["kl"][-last_steps:]),
        "greedy_before": result["eval_before"]["greedy_accuracy"],
        "greedy_after": result["eval_after"]["greedy_accuracy"],
        "pass1_before": result["eval_before"]["pass_at_k"]["1"],
        "pass1_after": result["eval_after"]["pass_at_k"]["1"],
        "wall_s": result["wall_s"],
    }


ROWS = [
    ("peak RSS, whole run (MiB)", "peak_rss_mib", "{:.0f}"),
    ("peak RSS, to end of training (MiB)", "peak_rss_training_mib", "{:.0f}"),
    ("RSS after loading (MiB)", "rss_loaded_mib", "{:.0f}"),
    ("median step time (s)", "median_step_s", "{:.3f}"),
    ("  rollout (s)", "rollout_s", "{:.3f}"),
    ("  reference + old log-probs (s)", "logprob_s", "{:.3f}"),
    ("  forward + backward + step (s)", "train_s", "{:.3f}"),
    ("trainable parameters", "trainable_params", "{:,.0f}"),
    ("policy weights (MiB)", "policy_weights_mib", "{:.1f}"),
    ("reference weights (MiB)", "reference_weights_mib", "{:.1f}"),
    ("gradients, during backward (MiB)", "gradients_if_kept_mib", "{:.1f}"),
    ("AdamW state (MiB)", "adamw_state_mib", "{:.1f}"),
    ("reward, first steps", "reward_first", "{:.3f}"),
    ("reward, last steps", "reward_last", "{:.3f}"),
    ("KL to reference, last steps", "kl_last", "{:.4f}"),
    ("held-out greedy accuracy, before", "greedy_before", "{:.4f}"),
    ("held-out greedy accuracy, after", "greedy_after", "{:.4f}"),
    ("held-out pass@1, before", "pass1_before", "{:.4f}"),
    ("held-out pass@1, after", "pass1_after", "{:.4f}"),
    ("wall time per run (s)", "wall_s", "{:.0f}"),
]


def report(args: argparse.Namespace, results: list[dict[str, Any]], log=print) -> dict[str, Any]:
    """Print the per-run lines and the markdown table of medians; return the medians."""
    per_run = [{"side": r["spec"]["side"], "seed": r["spec"]["seed"], **summarize_run(r, args.last_steps)} for r in results]
    sides = {side: [run for run in per_run if run["side"] == side] for side in SIDES}
    table = {key: {side: statistics.median(run[key] for run in sides[side]) for side in SIDES} for _, key, _ in ROWS}
    full_run = next(r for r in results if r["spec"]["side"] == "full")
    log("")
    log(f"model parameters: {full_run['total_params']:,}")
    log(f"medians over {args.repeats} run(s) per side (seeds {args.seed}..{args.seed + args.repeats - 1}); step times "
        f"exclude step 1; reward over the first / last {args.last_steps} steps")
    log("")
    log("| | full fine-tuning | LoRA | LoRA / full |")
    log("|---|---:|---:|---:|")
    for label, key, fmt in ROWS:
        full, lora = table[key]["full"], table[key]["lora"]
        ratio = f"{lora / full:.2f}" if full and key.endswith(("_mib", "_s", "params")) else ""
        log(f"| {label} | {fmt.format(full)} | {fmt.format(lora)} | {ratio} |")
    for side in SIDES:
        changes = [run["greedy_after"] - run["greedy_before"] for run in sides[side]]
        log(f"{side}: greedy accuracy change per seed " + ", ".join(f"{c:+.4f}" for c in changes))
    return {"runs": per_run, "medians": table}


def random_model(directory: Path) -> str:
    """A seeded random-init Llama of the small recipe's shape, shrunk (for --quick): every reward 0, a test of
    the machinery only."""
    from dataclasses import replace

    from bench_models import RECIPES, build_char_tokenizer, build_random_model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    recipe = replace(RECIPES["small"], hidden_size=128, num_layers=2, intermediate_size=352, num_heads=4)
    tokenizer = build_char_tokenizer()
    build_random_model(recipe, tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def settings_line(args: argparse.Namespace, model_path: str) -> str:
    """What both sides share and where they differ."""
    return (f"model: {model_path}\n"
            f"both: arithmetic, exact match, preset grpo, beta {args.beta:g}, P={args.prompts_per_step} x "
            f"G={args.group_size}, max_new_tokens {args.max_new_tokens}, {args.steps} steps, constant lr, fp32, "
            f"micro-batch {args.micro_batch_size}, {args.threads} thread(s), held-out "
            f"{args.eval_limit or 'all'} problems x {args.eval_samples} samples + greedy\n"
            f"full: lr {args.full_lr:g}, reference = a second copy of the model; LoRA: lr {args.lora_lr:g}, "
            f"r {args.lora_r}, alpha {args.lora_alpha:g}, dropout {args.lora_dropout:g}, targets {args.lora_targets}, "
            f"reference = the base with the adapters off")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(Path(args.worker[0]), Path(args.worker[1]))
        return 0
    from bench_machine import machine_summary
    from bench_models import prepare_model

    started = time.perf_counter()
    machine = machine_summary(args.threads)
    print(f"cohort: full fine-tuning vs LoRA -- {machine['date']}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}; load average before: "
          + " ".join(f"{x:.2f}" for x in machine["load_before"]))
    with tempfile.TemporaryDirectory(prefix="lora-vs-full-") as scratch:
        runs_dir = args.keep_runs or Path(scratch)
        runs_dir.mkdir(parents=True, exist_ok=True)
        if args.model:
            model_path = args.model
        elif args.quick:
            model_path = random_model(Path(scratch) / "model")
        else:
            model_path = str(prepare_model("small", args.cache_dir))
        print(settings_line(args, model_path))
        print(f"running {args.repeats} repeat(s) per side, alternating full / LoRA, each in a fresh process:")
        results = run_all(args, model_path, runs_dir)
        paired = run_paired_subprocess(args, model_path, runs_dir) if args.paired_steps else None
    summary = report(args, results)
    if paired is not None:
        summary["paired"] = paired_report(paired)
    load_after = os.getloadavg()
    wall = time.perf_counter() - started
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}; wall time {wall:.0f} s")
    if args.json:
        settings = {key: (str(value) if isinstance(value, Path) else value)
                    for key, value in vars(args).items() if key != "worker"}
        payload = {"machine": {**machine, "load_after": load_after}, "settings": settings, "wall_s": wall, **summary,
                   "raw": results}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
        print(f"all measurements written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
