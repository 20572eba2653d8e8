#!/usr/bin/env python
"""Every method of the unified paradigm on the bundled demo, from the CLI: the README's methods table.

Runs ``cohort train algorithm.method=<method>`` for each method with the demo's settings
(src/cohort/assets/demo.yaml: the 0.44 M-parameter demo model, a+b / a-b up to 99, 64 prompts x 8
samples per step, evaluation on all 1,497 held-out problems before and after) but 600 steps (the
demo itself runs 300), one after the other in fresh processes, and prints a markdown table: method,
steps, wall time, held-out greedy accuracy and pass@1 before and after. Each run's directory keeps
everything it measured.

    python benchmarks/methods_demo.py                      # all six methods (~15 min on 2 cores)
    python benchmarks/methods_demo.py --methods sft dpo    # some of them
    python benchmarks/methods_demo.py --steps 20           # a shorter smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("runs/methods"), help="one run directory per method under it")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default: 600, the table in docs/methods.md)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides for every run")
    return parser.parse_args(argv)


def train(method: str, out: Path, steps: int | None, overrides: list[str]) -> dict:
    """One ``cohort train`` run in a fresh process (skipped when ``out`` already holds a finished
    run of this script: its numbers are read back); the run's evaluations, step count and times."""
    command = [str(Path(sys.executable).with_name("cohort")), "train", f"algorithm.method={method}",
               f"train.out_dir={out}", "log.console=quiet", *([f"train.steps={steps}"] if steps else []), *overrides]
    timing = out / "methods_demo_timing.json"
    if timing.is_file() and json.loads(timing.read_text()).get("command") != command:
        sys.exit(f"{out} holds a run of another command; remove it or choose another --out")
    if not timing.is_file():
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        timing.write_text(json.dumps({"command_seconds": time.perf_counter() - started, "command": command}))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "steps": len(metrics), "train_seconds": sum(m["time/step_s"] for m in metrics),
        "command_seconds": json.loads(timing.read_text())["command_seconds"], "command": " ".join(["cohort", *command[1:]]),
        "before": json.loads((out / "eval_before.json").read_text()), "after": json.loads((out / "eval_after.json").read_text()),
    }


def row(method: str, summary: dict) -> dict:
    """The table's numbers for one method."""
    before, after = summary["before"], summary["after"]
    return {
        "method": method, "steps": summary["steps"], "train_s": summary["train_seconds"], "command_s": summary["command_seconds"],
        "greedy_before": before["greedy_accuracy"], "greedy_after": after["greedy_accuracy"],
        "pass1_before": before["pass_at_k"]["1"], "pass1_after": after["pass_at_k"]["1"], "command": summary["command"],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| method | steps | training wall time | whole command | greedy accuracy before -> after | pass@1 before -> after |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['method']}` | {r['steps']} | {r['train_s']:.0f} s | {r['command_s']:.0f} s | "
                     f"{r['greedy_before']:.3f} -> **{r['greedy_after']:.3f}** | {r['pass1_before']:.3f} -> **{r['pass1_after']:.3f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    for method in args.methods:
        print(f"training {method} ...", flush=True)
        rows.append(row(method, train(method, args.out / method, args.steps, args.overrides)))
        print(f"  greedy {rows[-1]['greedy_before']:.3f} -> {rows[-1]['greedy_after']:.3f}, "
              f"pass@1 {rows[-1]['pass1_before']:.3f} -> {rows[-1]['pass1_after']:.3f} ({rows[-1]['command_s']:.0f} s)", flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
