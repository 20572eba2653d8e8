#!/usr/bin/env python
"""cohort vs TRL's GRPOTrainer on the same machine, model, task and settings, side by side.

Trains the same local Hugging Face model on cohort's arithmetic task (exact-match reward, the same
reward object on both sides) with cohort's ``Trainer`` (preset ``trl_parity``) and with TRL's
``GRPOTrainer`` (CPU, fp32, no vLLM), alternating cohort, TRL, cohort, TRL, ... with a fresh
subprocess per run, and prints per side: median step time (the first step excluded as warm-up),
completion tokens per second, peak resident memory of the run's process, mean reward over the last
steps, achieved FLOP/s against this machine's matmul peak; then the ratios cohort/TRL, cohort's time
split, and whether the targets hold.

    python benchmarks/vs_trl.py                      # the bundled demo model, the demo's settings (~3 min)
    python benchmarks/vs_trl.py --model-size small   # 25.7 M parameters (~15 min; +10 min to build it once)
    python benchmarks/vs_trl.py --model-size long --max-new-tokens 512   # the 5.6 M long writer, long completions
    python benchmarks/vs_trl.py --quick              # smoke run (< 1 min)
    python benchmarks/vs_trl.py --matrix             # the benchmark matrix (benchmarks/matrix.py; ~45 min)

Needs TRL: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_processes import check_run_args, run_measured
from bench_workers import PRECISIONS, REWARDS

# Targets of the promise "a cohort step takes a third of TRL's time or less" (half on the small model).
STEP_RATIO_TARGETS = {"tiny": 0.33, "small": 0.5, "long": 0.33}
# Per-size defaults. tiny: the bundled demo's own settings (64 prompts x 8, lr 5e-4); small: half the
# prompts (a TRL step of the 25 M model already takes ~8 s here) and an lr at which its reward rises;
# long: the long writer (bench_models.LongWriterRecipe), 8 prompts x 8 with 128-token completions,
# scored on its first line.
DEFAULT_PROMPTS = {"tiny": 64, "small": 32, "long": 8}
DEFAULT_LR = {"tiny": 5e-4, "small": 3e-5, "long": 1e-4}
DEFAULT_MAX_NEW_TOKENS = {"tiny": 8, "small": 8, "long": 128}
DEFAULT_REWARD = {"tiny": "exact_match", "small": "exact_match", "long": "first_line"}
MiB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="PATH", help="a local HF causal LM directory (overrides --model-size)")
    model.add_argument("--model-size", choices=sorted(STEP_RATIO_TARGETS), default="tiny",
                       help="tiny: the bundled demo model (0.44 M parameters); small: a 25.7 M-parameter Llama with "
                            "a character tokenizer, warm-started by SFT once and cached (~10 min the first time); "
                            "long: a 5.6 M-parameter long writer (answer, then a filler tail of random length; "
                            "built and cached the same way, ~10 min)")
    model.add_argument("--cache-dir", type=Path, help="where warm-started stand-in models are cached")
    model.add_argument("--no-warm-start", action="store_true",
                       help="small: random weights instead of the SFT warm start (all rewards 0: a smoke test, not "
                            "a comparison); tiny is always the shipped demo model")
    run = parser.add_argument_group("identical settings for both trainers")
    run.add_argument("--steps", type=int, default=30, help="training steps per run (default 30)")
    run.add_argument("--prompts-per-step", type=int, help="P (default: 64 for tiny, as in the demo; 32 for small)")
    run.add_argument("--group-size", type=int, default=8, help="G, completions per prompt (default 8)")
    run.add_argument("--max-new-tokens", type=int, help="completion budget (default 8; 128 for long)")
    run.add_argument("--reward", choices=sorted(REWARDS),
                     help="the reward both sides score with: exact_match (default) or first_line (exact match of the "
                          "first line; the default for long)")
    run.add_argument("--temperature", type=float, default=1.0)
    run.add_argument("--lr", type=float, help="AdamW learning rate, constant (default: 5e-4 tiny, 3e-5 small)")
    run.add_argument("--beta", type=float, default=0.0, help="KL coefficient (default 0: no reference model)")
    run.add_argument("--mu", type=int, default=1, help="optimisation passes per generation batch (default 1)")
    run.add_argument("--seed", type=int, default=0, help="seed of the first repeat; repeat r uses seed + r")
    run.add_argument("--autocast", choices=PRECISIONS, default="off",
                     help="mixed precision for both (cohort model.autocast, TRL bf16=True); weights stay float32")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both trainers run (default cpu)")
    run.add_argument("--threads", type=int, default=1,
                     help="torch threads per run (default 1: on a shared machine, OpenMP threads that wait for a busy "
                          "core make multi-threaded timings erratic)")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--repeats", type=int, default=3, help="runs per side, alternating cohort/TRL (default 3)")
    bench.add_argument("--micro-batch-size", type=int,
                       help="cohort's completions per forward/backward (default P*G: one forward, as TRL does)")
    bench.add_argument("--last-steps", type=int, help="steps whose mean reward is reported (default: last quarter)")
    bench.add_argument("--cohort-override", action="append", default=[], metavar="KEY=VALUE",
                       help="extra cohort config override (repeatable)")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write every measurement to this JSON file")
    bench.add_argument("--step-ratio-target", type=float,
                       help="the step-time target cohort/TRL (default: 0.33, 0.5 for small)")
    bench.add_argument("--matrix", action="store_true",
                       help="run the benchmark matrix instead (benchmarks/matrix.py; its own options follow)")
    bench.add_argument("--quick", action="store_true",
                       help="smoke run: 4 steps, P=4, G=4, 1 repeat, 1 thread, the demo model (or random weights for small)")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.prompts_per_step, args.group_size, args.repeats, args.threads = 4, 4, 4, 1, 1
        args.no_warm_start = True
    args.prompts_per_step = args.prompts_per_step or DEFAULT_PROMPTS[args.model_size]
    args.max_new_tokens = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[args.model_size]
    args.reward = args.reward or DEFAULT_REWARD[args.model_size]
    args.step_ratio_target = args.step_ratio_target or STEP_RATIO_TARGETS[args.model_size]
    check_run_args(parser, args, ("steps", "prompts_per_step", "max_new_tokens", "mu", "repeats", "threads"))
    if args.temperature <= 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    args.micro_batch_size = args.micro_batch_size or args.prompts_per_step * args.group_size
    args.lr = args.lr or DEFAULT_LR[args.model_size]
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    args.last_steps = args.last_steps or max(1, args.steps // 4)
    if not 1 <= args.last_steps < args.steps:
        parser.error(f"--last-steps must be in 1..{args.steps - 1}, got {args.last_steps}")
    return args


def require_trl() -> str:
    """TRL's version; exits with a clear message when it is not installed."""
    try:
        found = importlib.util.find_spec("trl") is not None
    except ImportError:  # a finder may refuse the name outright
        found = False
    if not found:
        sys.exit("vs_trl.py needs TRL, which is not installed: pip install -e '.[bench]'  (or: pip install 'trl>=1.0')")
    from importlib.metadata import version

    return version("trl")


# --- running ------------------------------------------------------------------------------------


def run_subprocess(spec, workdir: Path, index: int) -> dict[str, Any]:
    """Run one spec in a fresh Python process; its result plus the process's peak RSS (bytes)."""
    return run_measured(Path(__file__).resolve(), asdict(spec), workdir, index)


def run_all(args: argparse.Namespace, model_path: str, log=print) -> list[dict[str, Any]]:
    """Alternate cohort and TRL runs, ``args.repeats`` each; repeat r uses seed ``args.seed + r``."""
    from bench_workers import RunSpec

    results = []
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        for repeat in range(args.repeats):
            for side in ("cohort", "trl"):
                spec = RunSpec(
                    side=side, model_path=model_path, steps=args.steps, prompts_per_step=args.prompts_per_step,
                    group_size=args.group_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    lr=args.lr, beta=args.beta, mu=args.mu, seed=args.seed + repeat, threads=args.threads,
                    micro_batch_size=args.micro_batch_size, extra_cohort=list(args.cohort_override),
                    autocast=args.autocast, device=args.device, reward=args.reward,
                )
                log(f"  run {len(results) + 1}/{2 * args.repeats}: {side}, seed {spec.seed} ...", flush=True)
                result = run_subprocess(spec, Path(tmp), len(results))
                results.append(result)
                log(f"    median step {statistics.median(result['step_s'][1:]):.3f} s, "
                    f"peak RSS {result['peak_rss'] / MiB:.0f} MiB, reward (last {args.last_steps}) "
                    f"{statistics.fmean(result['reward'][-args.last_steps:]):.3f}", flush=True)
    return results


# --- summarising --------------------------------------------------------------------------------


def run_flops(result: dict[str, Any], model_info: dict[str, Any]) -> list:
    """The FLOPs of each of the run's steps (bench_machine.sequence_flops), from its recorded completion lengths."""
    from bench_machine import sequence_flops

    spec = result["spec"]
    trained = result.get("trained") or [None] * len(result["lengths"])
    return [
        sequence_flops(result["side"], model_info["matmul_params"], spec["group_size"], result["prompt_tokens_mean"],
                       lengths, trained=rows, beta=spec["beta"], mu=spec["mu"],
                       attention=model_info.get("attention_width", 0))
        for lengths, rows in zip(result["lengths"], trained)
    ]


def summarize_run(result: dict[str, Any], last_steps: int, model_info: dict[str, Any] | None = None) -> dict[str, float]:
    """One run's headline numbers; the first step is excluded from every time-based number.
    With ``model_info`` (matmul_params, attention_width): also its FLOPs per step and FLOP/s,
    summed over the timed steps (so steps of different lengths weigh by their work)."""
    timed = result["step_s"][1:]
    summary = {
        "median_step_s": statistics.median(timed),
        "tokens_per_s": sum(result["completion_tokens"][1:]) / sum(timed),
        "completion_len": statistics.fmean(result["completion_tokens"][1:]) / result["spec"]["prompts_per_step"]
        / result["spec"]["group_size"],
        "peak_rss_mib": result["peak_rss"] / MiB,
        **({"gpu_peak_mib": result["gpu_peak"] / MiB} if "gpu_peak" in result else {}),
        "rss_before_train_mib": result["rss_before_train"] / MiB,
        "reward_first": statistics.fmean(result["reward"][:last_steps]),
        "reward_last": statistics.fmean(result["reward"][-last_steps:]),
    }
    if "split" in result:
        for phase, values in result["split"].items():
            summary[f"{phase}_s"] = statistics.median(values[1:])
        phases = [sum(values) for values in zip(*result["split"].values())]
        summary["other_s"] = statistics.median(step - spent for step, spent in zip(timed, phases[1:]))
        summary["trained_frac"] = statistics.fmean(result["trained_frac"][1:])
    zero_std = [x for x in result.get("frac_reward_zero_std", [])[1:] if x == x]  # NaN: not logged
    if zero_std:
        summary["frac_reward_zero_std"] = statistics.fmean(zero_std)
    if result.get("lengths"):
        lengths = [n for step in result["lengths"][1:] for n in step]
        summary.update(length_min=min(lengths), length_median=statistics.median(lengths), length_max=max(lengths),
                       truncated_frac=sum(n >= result["spec"]["max_new_tokens"] for n in lengths) / len(lengths))
    if model_info is not None and result.get("lengths"):
        flops = run_flops(result, model_info)[1:]
        generation, training = sum(f.generation for f in flops), sum(f.training for f in flops)
        summary["gflop_per_step"] = (generation + training) / len(flops) / 1e9
        summary["achieved_gflops"] = (generation + training) / sum(timed) / 1e9
        if "split" in result:
            rollout_s = sum(result["split"]["rollout"][1:])
            train_s = sum(result["split"]["train"][1:]) + sum(result["split"]["logprob"][1:])
            summary["rollout_gflops"] = ratio(generation, rollout_s) / 1e9
            summary["train_gflops"] = ratio(training, train_s) / 1e9
    return summary


def reward_verdict(cohort: list[float], trl: list[float], samples_per_run: int) -> tuple[bool, str]:
    """Is cohort's final reward not worse than TRL's beyond run-to-run noise?

    Each run's final reward is a mean of ``samples_per_run`` 0/1 rewards. Run-to-run noise is the
    spread of that number across repeats (different seeds), pooled over the two sides (they run
    the same algorithm), and never taken below the binomial sampling noise of a single run, p(1-p)/n,
    which is all that a handful of repeats can under-estimate. "Not worse" means
    mean(cohort) >= mean(TRL) - 2 SE, with SE the standard error of the difference of the two means.
    """
    difference = statistics.fmean(cohort) - statistics.fmean(trl)
    p = min(max(statistics.fmean(cohort + trl), 0.0), 1.0)
    variance = p * (1 - p) / samples_per_run
    pooled = "binomial floor only (1 repeat per side)"
    if len(cohort) > 1 and len(trl) > 1:
        spread = ((len(cohort) - 1) * statistics.variance(cohort) + (len(trl) - 1) * statistics.variance(trl)) / (
            len(cohort) + len(trl) - 2
        )
        pooled = f"pooled sd over seeds {spread ** 0.5:.3f}, binomial floor {variance ** 0.5:.3f}"
        variance = max(variance, spread)
    se = (variance / len(cohort) + variance / len(trl)) ** 0.5
    return difference >= -2 * se, f"difference {difference:+.3f}, 2 SE = {2 * se:.3f}; {pooled}"


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0."""
    return numerator / denominator if denominator else float("nan")


def report(args, results, machine, model_info, peaks, load_after, log=print) -> dict[str, Any]:
    """Print the tables and the verdicts; return everything as one JSON-able dict."""
    per_run = [{"side": r["side"], "seed": r["seed"], **summarize_run(r, args.last_steps, model_info)} for r in results]
    sides = {side: [run for run in per_run if run["side"] == side] for side in ("cohort", "trl")}

    def median(side: str, key: str) -> float:
        values = [run[key] for run in sides[side] if key in run]
        return statistics.median(values) if values else float("nan")

    log("")
    log(f"{'run':>3}  {'side':<6} {'seed':>4}  {'median step s':>13}  {'tokens/s':>9}  {'peak RSS MiB':>12}  "
        f"{'reward first':>12}  {'reward last':>11}")
    for index, run in enumerate(per_run, 1):
        log(f"{index:>3}  {run['side']:<6} {run['seed']:>4}  {run['median_step_s']:>13.3f}  {run['tokens_per_s']:>9.0f}  "
            f"{run['peak_rss_mib']:>12.0f}  {run['reward_first']:>12.3f}  {run['reward_last']:>11.3f}")

    rows = [
        ("median step time (s)", "median_step_s", "{:.3f}"),
        ("completion tokens/s", "tokens_per_s", "{:.0f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("RSS before training (MiB)", "rss_before_train_mib", "{:.0f}"),
        *([("peak GPU memory (MiB)", "gpu_peak_mib", "{:.0f}")] if args.device == "cuda" else []),
        ("mean completion length", "completion_len", "{:.2f}"),
        ("median completion length", "length_median", "{:.1f}"),
        ("completions at the budget", "truncated_frac", "{:.2f}"),
        ("groups with equal rewards", "frac_reward_zero_std", "{:.2f}"),
        (f"reward, first {args.last_steps} steps", "reward_first", "{:.3f}"),
        (f"reward, last {args.last_steps} steps", "reward_last", "{:.3f}"),
        ("GFLOP executed per step", "gflop_per_step", "{:.2f}"),
        ("achieved GFLOP/s", "achieved_gflops", "{:.2f}"),
    ]
    log("")
    log(f"medians over {args.repeats} run(s) per side; step times exclude step 1 (warm-up)")
    log(f"{'':<28} {'cohort':>10} {'TRL':>10} {'cohort/TRL':>11}")
    table: dict[str, dict[str, float]] = {}
    for label, key, fmt in rows:
        c, t = median("cohort", key), median("trl", key)
        table[key] = {"cohort": c, "trl": t, "ratio": ratio(c, t)}
        log(f"{label:<28} {fmt.format(c):>10} {fmt.format(t):>10} {ratio(c, t):>11.2f}")
    lengths = {side: (median(side, "length_min"), median(side, "length_max")) for side in sides}
    log(f"  completion lengths (tokens, EOS included; medians over runs of each run's min / max): "
        f"cohort {lengths['cohort'][0]:.0f}..{lengths['cohort'][1]:.0f}, TRL {lengths['trl'][0]:.0f}..{lengths['trl'][1]:.0f}")

    params, width = model_info["matmul_params"], model_info.get("attention_width", 0)
    precision = "bfloat16" if args.autocast == "bfloat16" else "float32"
    shares = {side: ratio(table["achieved_gflops"][side] * 1e9, peaks[precision]) for side in ("cohort", "trl")}
    peak_notes = "; ".join(
        f"{name} peak {peaks[name] / 1e9:.1f} GFLOP/s: cohort {100 * table['achieved_gflops']['cohort'] * 1e9 / peaks[name]:.0f}%, "
        f"TRL {100 * table['achieved_gflops']['trl'] * 1e9 / peaks[name]:.0f}%"
        for name in ("float32", "bfloat16")
    )
    log(f"  FLOPs each trainer runs, counted per sequence from its own completion length: 2 x {params / 1e6:.2f} M "
        f"matmul params per token run without gradients, 6 x per token trained, plus causal attention (4 x "
        f"{width} attention width per query-key pair forward, 12 x trained); one more forward per token for the "
        f"reference when beta > 0 (and pi_old when mu > 1); padding not counted. "
        f"{results[0]['prompt_tokens_mean']:.1f} prompt tokens per sequence; TRL samples and trains every prompt G "
        f"times, cohort once per group and trains only non-zero-advantage sequences at beta = 0. "
        f"Against the measured matmul peaks ({peak_notes})")

    split = {phase: median("cohort", f"{phase}_s") for phase in ("rollout", "reward", "logprob", "train", "other")}
    log("")
    log("cohort's step, median seconds per phase (time/* metrics; logprob = reference / pi_old forwards; "
        "other = advantages, metrics, logging):")
    log("  " + ", ".join(f"{phase} {seconds:.3f}" for phase, seconds in split.items())
        + f"; step {median('cohort', 'median_step_s'):.3f}")
    log(f"  rollout {median('cohort', 'rollout_gflops'):.1f} GFLOP/s; train + logprob {median('cohort', 'train_gflops'):.1f} "
        f"GFLOP/s (on the {100 * median('cohort', 'trained_frac'):.0f}% of sequences trained)")

    target = args.step_ratio_target
    step_ratio = table["median_step_s"]["ratio"]
    memory = "gpu_peak_mib" if args.device == "cuda" else "peak_rss_mib"  # on a GPU: its memory, not the host's
    memory_ok = table[memory]["cohort"] <= table[memory]["trl"]
    reward_ok, reward_note = reward_verdict(
        [r["reward_last"] for r in sides["cohort"]], [r["reward_last"] for r in sides["trl"]],
        samples_per_run=args.last_steps * args.prompts_per_step * args.group_size,
    )
    log("")
    log("targets:" + ("  (--quick is a smoke run of the machinery; judge the targets on a full run)" if args.quick else ""))
    log(f"  step time cohort/TRL <= {target}: {'HOLDS' if step_ratio <= target else 'DOES NOT HOLD'} ({step_ratio:.2f})")
    log(f"  peak {'GPU memory' if args.device == 'cuda' else 'memory'} not above TRL's: {'HOLDS' if memory_ok else 'DOES NOT HOLD'} "
        f"({table[memory]['cohort']:.0f} vs {table[memory]['trl']:.0f} MiB)")
    log(f"  reward after {args.steps} steps not worse beyond noise: {'HOLDS' if reward_ok else 'DOES NOT HOLD'} ({reward_note})")
    log(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    return {
        "machine": {**machine, "load_after": load_after, "matmul_peak_flops": peaks},
        "model": model_info,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items() if key != "worker"},
        "runs": per_run,
        "medians": table,
        "cohort_split_s": split,
        "cohort_phase_gflops": {"rollout": median("cohort", "rollout_gflops"), "train": median("cohort", "train_gflops")},
        "peak_share": {"precision": precision, **shares},
        "targets": {"step_ratio": step_ratio, "step_ratio_target": target, "step_ratio_ok": step_ratio <= target,
                    "memory_ok": memory_ok, "reward_ok": reward_ok, "reward_note": reward_note},
        "raw": results,
    }


# --- main ---------------------------------------------------------------------------------------


def describe_model(path: str) -> dict[str, Any]:
    """Parameter counts and attention width of the model at ``path`` (loaded once, on CPU)."""
    import torch
    from bench_machine import attention_width, matmul_parameters
    from bench_models import parameter_count
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {"path": path, "architecture": type(model).__name__, "params": parameter_count(model),
            "matmul_params": matmul_parameters(model), "attention_width": attention_width(model.config)}


def measure_machine(args: argparse.Namespace, trl_version: str, log=print) -> tuple[dict[str, Any], dict[str, float]]:
    """The machine's summary and its matmul peaks (float32, bfloat16) on ``args.device``, printed."""
    import torch
    from bench_machine import machine_summary, matmul_peak

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but CUDA is not available on this machine")
    torch.set_num_threads(args.threads)
    machine = machine_summary(args.threads)
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(0)
    log(f"cohort vs TRL {trl_version} GRPOTrainer -- {machine['date']}")
    log(f"machine: {machine['cpu']}, {machine['cores']} cores ({' '.join(machine['flags'])}), torch {machine['torch']}, "
        f"{args.threads} torch thread(s); load average before: {' '.join(f'{x:.2f}' for x in machine['load_before'])}"
        + (f"; GPU: {machine['gpu']}" if args.device == "cuda" else ""))
    size = 4096 if args.device == "cuda" else 1024  # a GPU needs a larger matmul to reach its peak
    peaks = {name: matmul_peak(getattr(torch, name), args.threads, size=size, device=args.device)
             for name in ("float32", "bfloat16")}
    log(f"matmul peak ({size}x{size} on {args.device}, {args.threads} thread(s)): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    return machine, peaks


def resolve_model(args: argparse.Namespace, scratch: str, log=print) -> str:
    """The model directory to benchmark: --model, a random-weight stand-in (--no-warm-start), or the cached model."""
    from bench_models import (
        RECIPES,
        build_char_tokenizer,
        build_random_model,
        prepare_model,
        recipe_characters,
    )

    if args.model:
        return args.model
    if args.no_warm_start and args.model_size in RECIPES:  # tiny is always the shipped demo model
        recipe = RECIPES[args.model_size]
        tokenizer = build_char_tokenizer(recipe_characters(recipe))
        build_random_model(recipe, tokenizer).save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        log("model: random-weight stand-in (no warm start): rewards are all 0, so this is a smoke run, not a comparison")
        return scratch
    return str(prepare_model(args.model_size, args.cache_dir, log=log))


def compare(args: argparse.Namespace, model_path: str, machine: dict[str, Any], peaks: dict[str, float],
            log=print) -> dict[str, Any]:
    """Run both trainers on ``model_path`` as ``args`` says, alternating, and report (printed and returned)."""
    from bench_machine import load_average

    model_info = describe_model(model_path)
    log(f"model: {model_path} ({model_info['architecture']}, {model_info['params'] / 1e6:.2f} M parameters, "
        f"{model_info['matmul_params'] / 1e6:.2f} M in matmuls)")
    log(f"settings (both trainers): P={args.prompts_per_step} prompts x G={args.group_size} = "
        f"{args.prompts_per_step * args.group_size} completions/step, max_new_tokens={args.max_new_tokens}, "
        f"temperature={args.temperature:g}, lr={args.lr:g} (constant), beta={args.beta:g}, mu={args.mu}, "
        f"steps={args.steps}, fp32 weights on {args.device}; reward {args.reward}; token-mean loss (TRL "
        f"loss_type='dapo'), clip 0.2, (r-mean)/(std+1e-4) advantages; cohort micro_batch_size={args.micro_batch_size}"
        + (f"; autocast {args.autocast} on both sides" if args.autocast != "off" else ""))
    log(f"running {args.repeats} repeat(s) per side, alternating cohort/TRL, seeds {args.seed}.."
        f"{args.seed + args.repeats - 1}, each in a fresh process:")
    results = run_all(args, model_path, log=log)
    return report(args, results, machine, model_info, peaks, load_average(), log=log)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--matrix" in argv:  # the matrix has its own options (benchmarks/matrix.py --help)
        from matrix import main as matrix_main

        return matrix_main([arg for arg in argv if arg != "--matrix"])
    args = parse_args(argv)
    if args.worker:
        from bench_workers import run_worker

        run_worker(Path(args.worker[0]), Path(args.worker[1]))
        return 0
    trl_version = require_trl()
    machine, peaks = measure_machine(args, trl_version)
    with tempfile.TemporaryDirectory(prefix="vs-trl-model-") as scratch:
        summary = compare(args, resolve_model(args, scratch), machine, peaks)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
        print(f"all measurements written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
