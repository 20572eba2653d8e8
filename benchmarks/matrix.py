#!/usr/bin/env python
"""The cohort-vs-TRL benchmark matrix: vs_trl.py's side-by-side comparison at several shapes.

Each cell is one ``vs_trl.py`` comparison (its options below; the same machinery: alternating
fresh cohort / TRL subprocesses, medians of the repeats, step 1 excluded as warm-up), printed in
full as it finishes; then one markdown table sums up the whole matrix, with per cell the step
times and their ratio, completion tokens/s, peak RSS, reward, FLOP/s against the matmul peak,
the share of sequences cohort trained, cohort's phase split, and whether the targets hold:

- step time cohort/TRL <= 0.33;
- peak RSS not above TRL's;
- reward after the steps not worse than TRL's beyond run-to-run noise (vs_trl.reward_verdict);
- models of >= 5 M parameters with a >= 128-token budget: cohort reaches >= 60% of the measured
  matmul peak (of the precision it computes in) over its whole step.

    python benchmarks/matrix.py --json matrix.json      # the whole matrix (~45 min on 2 cores, 1 thread)
    python benchmarks/vs_trl.py --matrix --json m.json  # the same
    python benchmarks/matrix.py --cells long-512-b0.04  # some cells only
    python benchmarks/matrix.py --quick                 # smoke run of the machinery (< 1 min)

The long cells use the long writer (bench_models.LongWriterRecipe, built once and cached, ~10 min)
scored on its first line; the small cell the 25.7 M model (cached, ~10 min to build once).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import vs_trl  # noqa: E402  (after the path is set)

STEP_RATIO_TARGET = 0.33
PEAK_SHARE_TARGET = 0.60  # of the matmul peak, for models >= PEAK_TARGET_PARAMS at budgets >= PEAK_TARGET_TOKENS
PEAK_TARGET_PARAMS = 5_000_000
PEAK_TARGET_TOKENS = 128


@dataclass(frozen=True)
class Cell:
    """One comparison of the matrix: its name, vs_trl.py options, and the expected minutes on a quiet 2-core CPU."""

    name: str
    options: tuple[str, ...]
    minutes: float = 0.0


def _tiny(beta: str, minutes: float) -> Cell:
    return Cell(f"tiny-8x8-b{beta}", ("--model-size", "tiny", "--prompts-per-step", "8", "--group-size", "8",
                                      "--max-new-tokens", "8", "--beta", beta, "--steps", "30"), minutes)


def _long(budget: int, beta: str, prompts: int, steps: int, minutes: float) -> Cell:
    return Cell(f"long-{budget}-b{beta}", ("--model-size", "long", "--prompts-per-step", str(prompts), "--group-size", "8",
                                           "--max-new-tokens", str(budget), "--beta", beta, "--steps", str(steps),
                                           "--last-steps", str(steps // 2)), minutes)


# The expected minutes come from quick runs on the 2-core development CPU (1 thread; ~10 s per run to
# start a process and load the libraries, then steps x the measured step time, 3 runs per side).
# 512-token cells use 4 prompts x 8 (32 completions): a TRL step there already takes ~25-30 s and
# ~4.4 GB of RSS per side; 128-token cells 8 x 8.
CELLS = (
    _tiny("0", minutes=1.0),
    _tiny("0.04", minutes=1.0),
    _long(128, "0", prompts=8, steps=6, minutes=5.0),
    _long(128, "0.04", prompts=8, steps=6, minutes=5.7),
    _long(512, "0", prompts=4, steps=6, minutes=11.5),
    _long(512, "0.04", prompts=4, steps=6, minutes=13.6),
    Cell("small-32x8-b0.04", ("--model-size", "small", "--prompts-per-step", "32", "--group-size", "8",
                              "--max-new-tokens", "8", "--beta", "0.04", "--steps", "12", "--last-steps", "6"), 8.5),
)

# --quick: the machinery end to end in well under a minute: a demo-model cell with a reference model
# and a variable-length cell of a random-weight long writer, one repeat of a few steps each.
QUICK_CELLS = (
    Cell("quick-tiny-b0.04", ("--model-size", "tiny", "--prompts-per-step", "2", "--group-size", "4",
                              "--max-new-tokens", "4", "--beta", "0.04", "--steps", "3")),
    Cell("quick-long-b0", ("--model-size", "long", "--no-warm-start", "--prompts-per-step", "2", "--group-size", "4",
                           "--max-new-tokens", "24", "--beta", "0", "--steps", "3")),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", help="comma-separated cell names to run (default: all): "
                        + ", ".join(cell.name for cell in CELLS))
    parser.add_argument("--repeats", type=int, default=3, help="runs per side per cell, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1, as vs_trl.py)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both trainers run (default cpu)")
    parser.add_argument("--autocast", choices=vs_trl.PRECISIONS, default="off", help="mixed precision for both sides")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat; repeat r uses seed + r")
    parser.add_argument("--cache-dir", type=Path, help="where warm-started stand-in models are cached")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every cell's measurements to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smoke run: two small cells (the demo model with a reference model; a "
                        "random-weight long writer), 1 repeat of 3 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    pool = QUICK_CELLS if args.quick else CELLS
    if args.cells:
        names = [name.strip() for name in args.cells.split(",") if name.strip()]
        known = {cell.name: cell for cell in pool}
        unknown = [name for name in names if name not in known]
        if unknown:
            parser.error(f"unknown cell(s) {', '.join(unknown)}; cells: {', '.join(known)}")
        args.selected = [known[name] for name in names]
    else:
        args.selected = list(pool)
    return args


def cell_args(cell: Cell, args: argparse.Namespace) -> argparse.Namespace:
    """vs_trl.py's arguments for ``cell`` with the matrix-wide settings."""
    common = ["--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device,
              "--autocast", args.autocast, "--seed", str(args.seed), "--step-ratio-target", str(STEP_RATIO_TARGET)]
    if args.cache_dir:
        common += ["--cache-dir", str(args.cache_dir)]
    parsed = vs_trl.parse_args([*cell.options, *common])
    parsed.quick = args.quick  # the per-cell report then says a smoke run is not a comparison
    return parsed


def run_cell(cell: Cell, args: argparse.Namespace, trl_version: str, scratch: Path) -> dict[str, Any]:
    """One cell: vs_trl.py's comparison, printed in full; its summary with the matrix's verdicts."""
    started = time.perf_counter()
    options = cell_args(cell, args)
    machine, peaks = vs_trl.measure_machine(options, trl_version)
    directory = scratch / cell.name
    directory.mkdir()
    summary = vs_trl.compare(options, vs_trl.resolve_model(options, str(directory)), machine, peaks)
    summary["cell"] = {"name": cell.name, "options": list(cell.options), "wall_s": time.perf_counter() - started,
                       "expected_minutes": cell.minutes}
    summary["matrix_targets"] = verdicts(summary)
    return summary


def verdicts(summary: dict[str, Any]) -> dict[str, Any]:
    """The matrix's four targets for one cell: True / False, or None where a target does not apply."""
    settings, medians = summary["settings"], summary["medians"]
    share = summary["peak_share"]["cohort"]
    peak_applies = summary["model"]["params"] >= PEAK_TARGET_PARAMS and settings["max_new_tokens"] >= PEAK_TARGET_TOKENS
    step_ratio = medians["median_step_s"]["ratio"]
    return {
        "step_ratio": step_ratio <= STEP_RATIO_TARGET,
        "memory": summary["targets"]["memory_ok"],
        "reward": summary["targets"]["reward_ok"],
        "peak_share": (share >= PEAK_SHARE_TARGET) if peak_applies else None,
    }


def _pair(medians: dict[str, dict[str, float]], key: str, fmt: str) -> str:
    values = medians.get(key, {})
    return " / ".join(fmt.format(values.get(side, math.nan)) for side in ("cohort", "trl"))


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else ("HOLDS" if value else "**DOES NOT HOLD**")


SUMMARY_COLUMNS = (
    "cell", "model", "P x G", "budget", "beta", "runs x steps", "step s cohort / TRL", "cohort/TRL",
    "completion tok/s cohort / TRL", "peak RSS MiB cohort / TRL", "reward cohort / TRL", "mean length cohort / TRL",
    "cohort trained frac", "GFLOP/s cohort / TRL (cohort % of peak)",
    "cohort split s: rollout / logprob (ref) / train / reward / other", "wall min",
    f"step <= {STEP_RATIO_TARGET} x TRL", "peak memory <= TRL", "reward within noise", f">= {PEAK_SHARE_TARGET:.0%} of peak",
)


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN: not measured
    return statistics.median(values) if values else math.nan


def summary_row(summary: dict[str, Any]) -> list[str]:
    """One cell's row of the summary table."""
    settings, medians, split = summary["settings"], summary["medians"], summary["cohort_split_s"]
    trained = _median([run.get("trained_frac", math.nan) for run in summary["runs"] if run["side"] == "cohort"])
    targets = summary["matrix_targets"]
    share = summary["peak_share"]
    return [
        summary["cell"]["name"],
        f"{summary['model']['params'] / 1e6:.2f} M",
        f"{settings['prompts_per_step']} x {settings['group_size']}",
        str(settings["max_new_tokens"]),
        f"{settings['beta']:g}",
        f"{settings['repeats']} x {settings['steps']}",
        _pair(medians, "median_step_s", "{:.3f}"),
        f"{medians['median_step_s']['ratio']:.2f}",
        _pair(medians, "tokens_per_s", "{:.0f}"),
        _pair(medians, "peak_rss_mib", "{:.0f}") + (f" (GPU {_pair(medians, 'gpu_peak_mib', '{:.0f}')})"
                                                    if "gpu_peak_mib" in medians else ""),
        _pair(medians, "reward_last", "{:.3f}"),
        _pair(medians, "completion_len", "{:.1f}"),
        f"{trained:.2f}",
        f"{_pair(medians, 'achieved_gflops', '{:.1f}')} ({100 * share['cohort']:.0f}% of {share['precision']})",
        " / ".join(f"{split[phase]:.3f}" for phase in ("rollout", "logprob", "train", "reward", "other")),
        f"{summary['cell']['wall_s'] / 60:.1f}",
        _verdict(targets["step_ratio"]),
        _verdict(targets["memory"]),
        _verdict(targets["reward"]),
        _verdict(targets["peak_share"]),
    ]


def summary_table(summaries: list[dict[str, Any]]) -> str:
    """The matrix as one markdown table (a failed cell's row says so)."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for summary in summaries:
        cells = (summary_row(summary) if "error" not in summary else
                 [summary["cell"]["name"], f"FAILED: {summary['error']}"] + [""] * (len(SUMMARY_COLUMNS) - 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path | None, summaries: list[dict[str, Any]], complete: bool) -> None:
    """Every cell so far (rewritten after each cell, so an interrupted matrix keeps what it measured)."""
    if path is not None:
        path.write_text(json.dumps({"complete": complete, "cells": summaries, "table": summary_table(summaries)},
                                   indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trl_version = vs_trl.require_trl()
    from bench_machine import load_average

    started = time.perf_counter()
    expected = sum(cell.minutes for cell in args.selected)
    print(f"benchmark matrix: {len(args.selected)} cell(s), {args.repeats} run(s) per side each"
          + (f"; expected ~{expected:.0f} min on a quiet 2-core CPU, 1 thread (plus ~10 min per stand-in model "
             "not built yet)" if expected else ""), flush=True)
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vs-trl-matrix-") as scratch:
        for index, cell in enumerate(args.selected, 1):
            print(f"\n=== cell {index}/{len(args.selected)}: {cell.name} ({' '.join(cell.options)}) ===", flush=True)
            try:
                summaries.append(run_cell(cell, args, trl_version, Path(scratch)))
            except SystemExit as failure:  # a run failed (vs_trl.py exits with its log's tail): go on with the next cell
                print(f"cell {cell.name} FAILED: {failure}", flush=True)
                summaries.append({"cell": {"name": cell.name, "options": list(cell.options)},
                                  "error": str(failure).splitlines()[0] if str(failure) else "failed"})
            write_json(args.json, summaries, complete=False)
    date = next((s["machine"]["date"] for s in summaries if "machine" in s), "")
    print(f"\n## Benchmark matrix ({date}; {args.repeats} run(s) per side per cell, "
          f"medians; step 1 excluded; {time.perf_counter() - started:.0f} s in all; load average after "
          f"{' '.join(f'{x:.2f}' for x in load_average())})\n")
    print(summary_table(summaries))
    print("\nlogprob (ref) = cohort's reference-model (beta > 0) and pi_old (mu > 1) forwards; other = advantages, "
          "metrics, logging. GFLOP/s counts each sequence's own length, attention included, the reference forward when "
          f"beta > 0, padding never; the peak target applies to models >= {PEAK_TARGET_PARAMS / 1e6:.0f} M parameters at "
          f"budgets >= {PEAK_TARGET_TOKENS} tokens.")
    if args.quick:
        print("(--quick is a smoke run of the machinery; judge the targets on a full run)")
    write_json(args.json, summaries, complete=True)
    if args.json:
        print(f"all measurements written to {args.json}")
    return 1 if any("error" in summary for summary in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
