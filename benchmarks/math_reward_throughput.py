"""Throughput of the math reward: answers checked per second, in killable worker processes against
checking in this process (what the reward did before its checks moved to workers).

    python benchmarks/math_reward_throughput.py [--repeats 5] [--workers 1 2]

The answers are GSM8K- and MATH-style completions built from cohort's sample problems
(``cohort.data.samples``): worked text ending in ``#### 138``, "The answer is 138.", ``\\boxed{}``
(``\\frac``, ``\\sqrt``, intervals, polynomials), right and wrong, 8 per problem, scored in batches of
64 (8 problems x 8 samples, a training step), so equal (reference, answer) pairs repeat as in
training. Each mode gets a warm-up pass, then ``--repeats`` timed passes over every batch; the median
is printed. Also measured: the cold start (the first call of a fresh pool: fork server and workers
started) and the cost of one killed check (a pathological answer at a 1 s limit) with the worker's
replacement. The load average is printed with the results; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from cohort.data.samples import GSM8K_SAMPLES, MATH_SAMPLES
from cohort.rewards.math import MathAnswerReward, answer_verdict, reference_answer_text, reference_is_readable
from cohort.rewards.workers import WorkerPool

GROUP = 8

# how a completion states its answer; {work} is a line of reasoning, {answer} the answer
GSM8K_ENDINGS = ("{work}\n#### {answer}", "{work}\nThe answer is {answer}.", "{work}\nSo the total is $\\boxed{{{answer}}}$.",
                 "{work} That makes {answer} in all.")
MATH_WRONG = (r"\frac{{{a}}}{{{b}}}", "{a}", r"{a}\sqrt{{{b}}}", "({a}, {b})", "x^2 + {a}x + {b}", r"\frac{{\sqrt{{{a}}}}}{{{b}}}")
MATH_SAME = {  # other ways of writing a reference, which math-verify must accept
    r"\frac{19}{12}": r"\dfrac{19}{12}", "7": "7.0", r"5\sqrt{2}": r"\sqrt{50}", r"\frac{1}{6}": "1/6",
    "(-1, 4)": "(-1,4)", "x^2 + 6x + 9": "(x+3)^2", r"\frac{4}{11}": r"\frac{8}{22}", r"\frac{\sqrt{3}}{3}": r"\frac{1}{\sqrt{3}}",
    "0, 2": r"\{2, 0\}", r"\frac{2}{3}": "0.6666666667", "25\\pi": "25 \\pi",
}


def gsm8k_completions(rng: random.Random, work: str, answer: str) -> list[str]:
    work = work.rsplit("####", 1)[0].strip().replace("\n", " ")
    out = []
    for k in range(GROUP):
        value = answer.replace(",", "") if k % 3 else str(int(float(answer.replace(",", ""))) + rng.choice([-10, -1, 1, 7]))
        out.append(rng.choice(GSM8K_ENDINGS).format(work=work, answer=value))
    return out


def math_completions(rng: random.Random, solution: str, reference: str) -> list[str]:
    """The worked solution, its boxed answer replaced: the reference, another way of writing it, or a wrong one."""
    out = []
    for k in range(GROUP):
        if k % 3 == 0:
            answer = reference
        elif k % 3 == 1:
            answer = MATH_SAME.get(reference, reference)
        else:
            answer = rng.choice(MATH_WRONG).format(a=rng.randint(1, 30), b=rng.randint(2, 30))
        out.append(solution.replace(f"\\boxed{{{reference}}}", f"\\boxed{{{answer}}}"))
    return out


def batches(seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(completions, references) batches of 8 problems x 8 completions, GSM8K and MATH interleaved."""
    rng = random.Random(seed)
    rows: list[tuple[list[str], str]] = []
    for _, worked in GSM8K_SAMPLES:
        answer = reference_answer_text(worked)
        rows.append((gsm8k_completions(rng, worked, answer), worked))
    for _, solution, _, _ in MATH_SAMPLES:
        rows.append((math_completions(rng, solution, reference_answer_text(solution)), solution))
    rng.shuffle(rows)
    out = []
    for start in range(0, len(rows) - GROUP + 1, GROUP):
        chunk = rows[start : start + GROUP]
        out.append(([c for completions, _ in chunk for c in completions], [ref for _, ref in chunk for _ in range(GROUP)]))
    return out


def in_process(reward: MathAnswerReward, completions: list[str], references: list[str]) -> list[float | None]:
    """The reward's work done in this process, as before the workers: the same extraction, the same
    checks of each distinct pair, no isolation (and so no deadline that holds inside a C call)."""
    texts = [reference_answer_text(r) for r in references]
    answers = [reward.extract_text(c) for c in completions]
    readable = {r: reference_is_readable(r) for r in set(texts) if r is not None}
    verdicts = {(r, a): answer_verdict(r, a, reward.float_rounding) for r, a in set(zip(texts, answers))
                if r is not None and readable[r] and a is not None}
    return [None if r is None or not readable[r] else 0.0 if a is None else verdicts[(r, a)] for r, a in zip(texts, answers)]


def answers_per_second(score, data, repeats: int) -> tuple[float, list[float]]:
    """Median answers/s over ``repeats`` passes (after one warm-up pass), and every pass's rate."""
    total = sum(len(completions) for completions, _ in data)
    for completions, references in data:
        score(completions, references)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for completions, references in data:
            score(completions, references)
        rates.append(total / (time.perf_counter() - started))
    return statistics.median(rates), rates


def cold_and_kill(limit_s: float = 1.0) -> tuple[float, float, float]:
    """Seconds for: the first check on a fresh one-worker pool (cold), a pathological answer at
    ``limit_s`` (its deadline, the kill), and the next check (which waits for the replacement)."""
    pool = WorkerPool(1, preload=("cohort.rewards.math",))
    try:
        started = time.perf_counter()
        pool.run(answer_verdict, [("138", "138", 6)], 60.0)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        (late,) = pool.run(answer_verdict, [("1000", "9^{9^{9}}", 6)], limit_s)
        killed = time.perf_counter() - started
        assert late.timed_out
        started = time.perf_counter()
        pool.run(answer_verdict, [("138", "138", 6)], 60.0)
        return cold, killed, time.perf_counter() - started
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per mode (the median is reported)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    args = parser.parse_args()
    data = batches()
    answers = sum(len(c) for c, _ in data)
    print(f"{answers} answers in {len(data)} batches of {GROUP}x{GROUP}; cpu_count {os.cpu_count()}; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cold, killed, after = cold_and_kill()
    print(f"cold start (fresh pool, first check): {cold:.2f} s; a pathological answer at a 1 s limit: {killed:.2f} s; "
          f"the next check, on the replaced worker: {after * 1000:.0f} ms")
    reference = MathAnswerReward()
    expected = [in_process(reference, c, r) for c, r in data]
    median, rates = answers_per_second(lambda c, r: in_process(reference, c, r), data, args.repeats)
    print(f"in-process (before):  {median:7.1f} answers/s  (passes: {', '.join(f'{x:.0f}' for x in rates)})")
    for workers in args.workers:
        reward = MathAnswerReward(workers=workers)
        if [reward([""] * len(c), c, answer=r) for c, r in data] != expected:
            raise SystemExit(f"workers={workers} scored differently from the in-process checks")
        median, rates = answers_per_second(lambda c, r: reward([""] * len(c), c, answer=r), data, args.repeats)
        print(f"workers={workers} (after):    {median:7.1f} answers/s  (passes: {', '.join(f'{x:.0f}' for x in rates)})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
