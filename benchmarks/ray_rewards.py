"""Code-reward throughput: the local backend (a thread pool of sandboxes in this process) against Ray
workers (reward.backend: ray), on one machine, same completions, medians of several rounds.

    python benchmarks/ray_rewards.py [--completions 64] [--workers 2] [--rounds 3]

Each round scores distinct correct MBPP-style completions (a function and three asserts) and checks
every score is 1.0. On one machine Ray cannot add cores; what it shows is its overhead, and that
the same reward code runs unchanged on a cluster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from sandbox_throughput import MBPP_SOLUTION, MBPP_TESTS

from cohort.rewards import build_reward
from cohort.rewards.ray_backend import RayReward, connect


def completions_per_second(reward, count: int) -> float:
    completions = [f"```python\n# attempt {i} {time.time_ns()}\n{MBPP_SOLUTION}```" for i in range(count)]
    start = time.perf_counter()
    scores = reward(prompts=["p"] * count, completions=completions, tests=[MBPP_TESTS] * count)
    elapsed = time.perf_counter() - start
    if scores != [1.0] * count:
        raise SystemExit(f"correct completions did not all score 1: {sorted(set(map(str, scores)))}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completions", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="sandbox threads (local) and Ray actors (ray)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = {"name": "code", "workers": args.workers}
    local = build_reward(spec).fn
    connect(None, num_cpus=os.cpu_count())
    remote = RayReward({"name": "code", "workers": 1}, workers=args.workers, chunk_size=max(1, args.completions // (2 * args.workers)))
    completions_per_second(local, args.workers)  # warm up both (imports, page cache, actor start)
    completions_per_second(remote, args.workers)
    results: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(args.rounds):  # alternate, so load on the machine hits both alike
        results["local"].append(completions_per_second(local, args.completions))
        results["ray"].append(completions_per_second(remote, args.completions))
    print(f"machine: {os.cpu_count()} CPUs; {args.completions} completions x 3 asserts per round, {args.rounds} rounds")
    for name, values in results.items():
        print(f"{name:5s}: {statistics.median(values):6.1f} completions/s (median; rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
