"""Real benchmark problems through the code reward: every reference solution scores 1, wrong ones 0.

The problems are vendored, unchanged, in tests/rewards/data (28 HumanEval problems and all 164 of
them, MIT; 15 MBPP problems, CC BY 4.0; see data/README.md). Each dataset is scored in one batch, so the judge
sandboxes run in parallel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from system_deps import requires_bubblewrap

from cohort.rewards.code import AssertionTest, CodeExecutionReward, parse_tests

pytestmark = [requires_bubblewrap, pytest.mark.timeout(120)]

DATA = Path(__file__).with_name("data")


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _fenced(program: str) -> str:
    return f"```python\n{program}\n```"


@pytest.fixture(scope="module")
def reward():
    return CodeExecutionReward(timeout_s=10, budget_s=30, workers=2)  # generous: correctness here, not speed


def test_humaneval_reference_solutions_score_one_and_stubs_zero(reward):
    rows = _rows("humaneval_sample.jsonl")
    assert len(rows) == 28
    specs = [{"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]} for r in rows]
    canonical = [_fenced(r["prompt"] + r["canonical_solution"]) for r in rows]
    stubs = [_fenced(r["prompt"] + "    pass\n") for r in rows]  # the signature alone: returns None
    scores = reward(None, canonical + stubs + [""], tests=specs + specs + [specs[0]])
    by_task = dict(zip([r["task_id"] for r in rows], scores))
    assert [task for task, score in by_task.items() if score != 1.0] == []
    assert scores[len(rows) :] == [0.0] * (len(rows) + 1)


def test_humaneval_checks_without_the_prompt_and_as_json(reward):
    """The plain {"test", "entry_point"} form, given as a JSON string. The program supplies only the entry
    point, never a helper: HumanEval/38's check calls the prompt's encode_cyclic, so without the prompt
    it cannot pass (whatever the program defines), and with it the reference passes."""
    rows = [r for r in _rows("humaneval_sample.jsonl") if r["task_id"] in ("HumanEval/2", "HumanEval/38", "HumanEval/136")]
    specs = [json.dumps({"test": r["test"], "entry_point": r["entry_point"]}) for r in rows]
    with_prompt = [{"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]} for r in rows]
    canonical = [_fenced(r["prompt"] + r["canonical_solution"]) for r in rows]
    assert reward(None, canonical + canonical, tests=specs + with_prompt) == [1.0, 0.0, 1.0] + [1.0] * 3
    assert parse_tests(specs[0]) == [AssertionTest(rows[0]["test"], entry_point="truncate_number")]


def _wrong(code: str) -> str:
    """The reference with every function body replaced by ``return None``."""
    names = re.findall(r"^def\s+(\w+)", code, re.MULTILINE)
    return "\n".join(f"def {name}(*args, **kwargs):\n    return None" for name in names)


def test_mbpp_reference_solutions_score_one_and_wrong_ones_zero(reward):
    rows = _rows("mbpp_sample.jsonl")
    assert len(rows) == 15
    row_specs = [{"test_list": r["test_list"], "test_imports": r["test_imports"]} for r in rows]  # MBPP's row form
    list_specs = [r["test_list"] for r in rows if not r["test_imports"]]  # the bare list of asserts
    plain = [r for r in rows if not r["test_imports"]]
    completions = [_fenced(r["code"]) for r in rows] + [_fenced(r["code"]) for r in plain] + [_fenced(_wrong(r["code"])) for r in rows]
    scores = reward(None, completions, tests=row_specs + list_specs + row_specs)
    n, m = len(rows), len(plain)
    by_task = dict(zip([r["task_id"] for r in rows], scores[:n]))
    assert [task for task, score in by_task.items() if score != 1.0] == []
    assert scores[n : n + m] == [1.0] * m
    assert scores[n + m :] == [0.0] * n


def test_mbpp_row_form_parses_its_imports_into_the_judges_setup():
    tests = parse_tests({"test_list": ["assert math.isclose(f(1), 1.0)"], "test_imports": ["import math"], "task_id": 1})
    assert tests == [AssertionTest("assert math.isclose(f(1), 1.0)", setup="import math")]


def _throughput_benchmark():
    """benchmarks/code_reward_throughput.py as a module (its workloads are what this test scores)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "code_reward_throughput.py"
    spec = importlib.util.spec_from_file_location("code_reward_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_of_humaneval_canonical_scores_one_and_corrupted_zero(reward):
    """benchmarks/code_reward_throughput.py's workload: 164 canonical solutions score 1, the 164 corrupted 0."""
    benchmark = _throughput_benchmark()
    rows = benchmark.humaneval_rows()
    assert len(rows) == 164
    completions, specs, expected = benchmark.humaneval_workload()
    assert expected == [1.0] * 164 + [0.0] * 164
    scores = reward(None, completions, tests=specs)
    assert [r["task_id"] for r, score in zip(rows, scores) if score != 1.0] == []
    assert [r["task_id"] for r, score in zip(rows, scores[len(rows) :]) if score != 0.0] == []
