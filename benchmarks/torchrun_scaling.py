#!/usr/bin/env python
"""Step time of one process against N torchrun ranks (DDP or FSDP2) on the same config and global batch.

Why: the README's Scaling section says what data parallelism buys; this measures it instead of
asserting it. What: for each setting it runs ``cohort train`` (the bundled demo unless
``--config`` is given: the same global batch of P prompts x G samples, evaluation off) once in one
process and once under ``python -m torch.distributed.run --standalone --nproc_per_node=N`` for each
strategy, one after the other, and prints the median step time and its phases (rollout, reward,
log-probs, train: the trainer's own ``time/*`` metrics; step 1 excluded) and the speed-up. Each
rank uses ``--threads`` torch threads (1 process gets ``N x threads``, so both use the same cores).

    python benchmarks/torchrun_scaling.py                          # demo, 1 vs 2 ranks, DDP and FSDP2
    python benchmarks/torchrun_scaling.py --methods grpo dpo ppo   # other methods of the loop
    python benchmarks/torchrun_scaling.py --json scaling.json      # also write the numbers
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("time/rollout_s", "time/reward_s", "time/logprob_s", "time/train_s", "time/step_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a run config (default: the bundled demo)")
    parser.add_argument("--ranks", type=int, default=2, help="torchrun processes (default 2)")
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp2"], choices=["ddp", "fsdp2"])
    parser.add_argument("--methods", nargs="+", default=["grpo"], help="algorithm.method values (default grpo)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides for every run")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (step 1 is excluded as warm-up)")
    if args.ranks < 2:
        parser.error("--ranks must be >= 2 (one process is always measured)")
    if any(o.startswith("train.out_dir=") for o in args.overrides):
        parser.error("train.out_dir is set by the script (one temporary directory per run)")
    return args


def run(args: argparse.Namespace, method: str, ranks: int, strategy: str, out: Path) -> dict:
    """One training run; the medians of its phase times (step 1 excluded) and its wall time."""
    launcher = [sys.executable, "-m", "cohort"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "cohort"]
    settings = [f"algorithm.method={method}", f"train.steps={args.steps}", f"train.out_dir={out}", "train.eval_before=false",
                "train.eval_after=false", f"train.threads={args.threads * (args.ranks if ranks == 1 else 1)}",
                "log.console=quiet", *([f"distributed.strategy={strategy}"] if ranks > 1 else []), *args.overrides]
    command = [*launcher, "train", *([args.config] if args.config else []), *settings]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()][1:]
    medians = {key.split("/")[1]: statistics.median(m[key] for m in metrics) if all(key in m for m in metrics) else float("nan")
               for key in PHASES}
    return {"method": method, "ranks": ranks, "strategy": strategy if ranks > 1 else "-", "wall_s": time.perf_counter() - started,
            **medians}


def table(rows: list[dict]) -> str:
    lines = ["| method | processes | strategy | step (s) | rollout | reward | log-probs | train | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    single = {r["method"]: r["step_s"] for r in rows if r["ranks"] == 1}
    for r in rows:
        lines.append(f"| `{r['method']}` | {r['ranks']} | {r['strategy']} | {r['step_s']:.3f} | {r['rollout_s']:.3f} | "
                     f"{r['reward_s']:.3f} | {r['logprob_s']:.3f} | {r['train_s']:.3f} | {single[r['method']] / r['step_s']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="torchrun-scaling-") as tmp:
        for method in args.methods:
            for ranks, strategy in [(1, "-"), *((args.ranks, s) for s in args.strategies)]:
                print(f"{method}: {ranks} process(es) {strategy} ...", flush=True)
                rows.append(run(args, method, ranks, strategy, Path(tmp) / f"{method}-{ranks}-{strategy}"))
                print(f"  median step {rows[-1]['step_s']:.3f} s", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
