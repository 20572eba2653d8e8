"""Throughput of the code sandbox on this machine: programs per second with the default worker count.

    python benchmarks/sandbox_throughput.py [--runs 64] [--workers N] [--isolation auto]

Prints the isolation in use, then programs/s for a trivial program, for a typical small
stdin/stdout solution, and for an unsandboxed ``python -I`` baseline run the same way, which shows
what the sandbox itself costs; then an MBPP-style problem (a function and three asserts) scored
through ``CodeExecutionReward``: completions/s and the sandboxes/s that took; then the same batch
with one completion in eight hanging in every call, against the reward's bound for that batch
(``worst_case_s``: ceil(N / workers) x (budget_s + teardown)).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from cohort.rewards.code import CodeExecutionReward
from cohort.rewards.sandbox.runner import (
    ISOLATIONS,
    ExecutionRequest,
    Sandbox,
    SandboxLimits,
)

TRIVIAL = "pass"
# A typical competitive-programming solution: parse input, a small DP, print the answer.
TYPICAL = """\
import sys
data = sys.stdin.read().split()
n, values = int(data[0]), list(map(int, data[1:]))
best = [0] * (n + 1)
for i, v in enumerate(values, 1):
    best[i] = max(best[i - 1], (best[i - 2] if i > 1 else 0) + v)
print(best[n])
"""
TYPICAL_INPUT = "200\n" + " ".join(str((i * 37) % 101) for i in range(200)) + "\n"
# An MBPP-style problem (MBPP task 2): a function checked by three assert statements.
MBPP_SOLUTION = """\
def similar_elements(test_tup1, test_tup2):
    return tuple(set(test_tup1) & set(test_tup2))
"""
MBPP_TESTS = [
    "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
    "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
    "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))",
]


def programs_per_second(sandbox: Sandbox, request: ExecutionRequest, runs: int) -> float:
    sandbox.run_many([request] * min(runs, sandbox.workers))  # warm the page cache
    start = time.perf_counter()
    results = sandbox.run_many([request] * runs)
    elapsed = time.perf_counter() - start
    failed = [r for r in results if not r.succeeded]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0]}")
    return runs / elapsed


def baseline_per_second(python: str, source: str, stdin: str, runs: int, workers: int) -> float:
    """The same program run as a plain subprocess (no isolation, no limits), same thread pool."""

    def one(_: int) -> None:
        subprocess.run([python, "-I", "-c", source], input=stdin.encode(), capture_output=True, check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(min(runs, workers))))
        start = time.perf_counter()
        list(pool.map(one, range(runs)))
    return runs / (time.perf_counter() - start)


def assertion_throughput(sandbox: Sandbox, runs: int) -> tuple[float, float]:
    """(completions/s, sandboxes/s) scoring distinct correct MBPP completions through the reward."""
    reward = CodeExecutionReward(sandbox=sandbox)
    completions = [f"```python\n# attempt {i}\n{MBPP_SOLUTION}```" for i in range(runs)]  # distinct: no dedup
    reward(None, completions[: sandbox.workers], tests=[MBPP_TESTS] * sandbox.workers)  # warm up
    started_before = getattr(sandbox, "sandboxes_started", None)
    start = time.perf_counter()
    scores = reward(None, completions, tests=[MBPP_TESTS] * runs)
    elapsed = time.perf_counter() - start
    if scores != [1.0] * runs:
        raise SystemExit(f"correct MBPP completions did not all score 1: {sorted(set(scores))}")
    if started_before is None:  # an older cohort without the counter: one process per assert
        sandboxes = runs * len(MBPP_TESTS)
    else:
        sandboxes = sandbox.sandboxes_started - started_before
    return runs / elapsed, sandboxes / elapsed


def hanging_batch(sandbox: Sandbox, runs: int) -> tuple[float, float]:
    """(seconds, the reward's bound) scoring ``runs`` MBPP completions of which one in eight hangs in every call."""
    reward = CodeExecutionReward(sandbox=sandbox)
    hang = "import time\ndef similar_elements(a, b):\n    time.sleep(600)\n"
    completions = [f"```python\n# attempt {i}\n{hang if i % 8 == 7 else MBPP_SOLUTION}```" for i in range(runs)]
    start = time.perf_counter()
    scores = reward(None, completions, tests=[MBPP_TESTS] * runs)
    elapsed = time.perf_counter() - start
    if scores != [0.0 if i % 8 == 7 else 1.0 for i in range(runs)]:
        raise SystemExit(f"the hanging batch did not score as expected: {scores}")
    return elapsed, reward.worst_case_s(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=64, help="programs per measurement")
    parser.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: os.cpu_count())")
    parser.add_argument("--isolation", choices=ISOLATIONS, default="auto")
    args = parser.parse_args()

    sandbox = Sandbox(SandboxLimits(), workers=args.workers, isolation=args.isolation)
    print(f"isolation: {sandbox.isolation}")
    print(f"workers:   {sandbox.workers} (os.cpu_count() = {os.cpu_count()})")
    print(f"python:    {sandbox.python}")
    trivial = programs_per_second(sandbox, ExecutionRequest(TRIVIAL), args.runs)
    typical = programs_per_second(sandbox, ExecutionRequest(TYPICAL, TYPICAL_INPUT), args.runs)
    plain = baseline_per_second(sys.executable, TYPICAL, TYPICAL_INPUT, args.runs, sandbox.workers)
    print(f"trivial program ({TRIVIAL!r}):        {trivial:6.1f} programs/s")
    print(f"typical stdin/stdout solution:    {typical:6.1f} programs/s")
    print(f"same, plain subprocess, no sandbox: {plain:6.1f} programs/s")
    completions, sandboxes = assertion_throughput(sandbox, args.runs)
    print(f"MBPP-style, 3 asserts, via reward: {completions:6.1f} completions/s ({sandboxes:.1f} sandboxes/s)")
    elapsed, bound = hanging_batch(sandbox, args.runs)
    print(f"same, 1 in 8 hanging (0 each):    {args.runs / elapsed:6.1f} completions/s ({elapsed:.1f} s; bound {bound:.1f} s)")


if __name__ == "__main__":
    main()
