"""GSM8K / MATH formats through `datasets` (JSONL and parquet), their error messages, and the sample files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import datasets
import pytest

from cohort.data.files import DatasetError
from cohort.data.math_formats import (
    MATH_FORMATS,
    gsm8k_reference,
    math_reference,
    normalize_math_dataset,
    read_math_file,
)
from cohort.data.samples import (
    GSM8K_SAMPLES,
    MATH_SAMPLES,
    main,
    write_sample_math_files,
)
from cohort.rewards.math import MathAnswerReward


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    return write_sample_math_files(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module", params=["jsonl", "parquet"])
def sample_paths(request, sample_files, tmp_path_factory):
    """The sample files as JSONL, and converted to parquet."""
    if request.param == "jsonl":
        return sample_files
    directory = tmp_path_factory.mktemp("parquet")
    paths = {}
    for name, path in sample_files.items():
        paths[name] = directory / f"{name}.parquet"
        datasets.Dataset.from_json(str(path)).to_parquet(str(paths[name]))
    return paths


def test_gsm8k_file(sample_paths):
    rows = read_math_file(sample_paths["gsm8k"], "gsm8k")
    assert len(rows) == len(GSM8K_SAMPLES) and {"question", "prompt", "answer", "solution"} <= set(rows.column_names)
    assert rows[0]["prompt"] == rows[0]["question"] == GSM8K_SAMPLES[0][0]
    assert rows[0]["answer"] == "138" and rows[0]["solution"].endswith("#### 138")
    answers = list(rows["answer"])
    assert "1250" in answers and "2160" in answers and "-3" in answers and "7.5" in answers  # commas stripped


def test_math_file_keeps_level_and_type(sample_paths):
    rows = read_math_file(sample_paths["math"], "math")
    assert len(rows) == len(MATH_SAMPLES)
    assert {"problem", "solution", "level", "type", "prompt", "answer"} == set(rows.column_names)
    assert rows[0]["answer"] == r"\frac{19}{12}" and rows[0]["prompt"] == rows[0]["problem"]
    assert r"\frac{\sqrt{3}}{3}" in list(rows["answer"])  # nested braces
    assert rows[0]["level"] == "Level 1" and rows[0]["type"] == "Prealgebra"


def test_custom_column_names_and_plain_passthrough():
    table = datasets.Dataset.from_list([{"q": "What is 6 * 7?", "work": "6 * 7 = 42\n#### 42", "id": 3}])
    rows = normalize_math_dataset(table, "gsm8k", "mem", question_column="q", solution_column="work")
    assert rows[0] == {"q": "What is 6 * 7?", "work": "6 * 7 = 42\n#### 42", "id": 3, "prompt": "What is 6 * 7?", "answer": "42"}
    plain = datasets.Dataset.from_list([{"prompt": "1+1=", "answer": "2"}])
    assert normalize_math_dataset(plain, "plain", "mem") is plain


def test_existing_prompt_and_answer_columns_are_replaced():
    table = datasets.Dataset.from_list([{"problem": "p", "solution": r"so \boxed{4}", "answer": "4", "prompt": "old"}])
    rows = normalize_math_dataset(table, "math", "math500.jsonl")
    assert rows[0]["prompt"] == "p" and rows[0]["answer"] == "4" and len(rows.column_names) == 4


def bad_gsm8k_rows(row_7_answer):
    rows = [{"question": f"q{i}", "answer": f"w\n#### {i}"} for i in range(1, 10)]
    rows[6]["answer"] = row_7_answer
    return rows


@pytest.mark.parametrize(
    ("row_7_answer", "message"),
    [
        ("she has 72 left", "no '#### <answer>' marker"),
        ("she has 72 left ####  ", "nothing after the '####' marker"),
        ("", "expected a non-empty gsm8k solution string, got ''"),
    ],
)
def test_bad_gsm8k_row_names_file_row_and_column(tmp_path, row_7_answer, message):
    path = write_jsonl(tmp_path / "train.jsonl", bad_gsm8k_rows(row_7_answer))
    with pytest.raises(DatasetError, match=re.escape(f"{path}: row 7, column 'answer': {message}")):
        read_math_file(path, "gsm8k")


def test_a_number_where_a_gsm8k_solution_belongs_is_reported():
    table = datasets.Dataset.from_list([{"question": "q", "answer": 72}])
    with pytest.raises(DatasetError, match="t.jsonl: row 1, column 'answer': expected a non-empty gsm8k solution string, got 72"):
        normalize_math_dataset(table, "gsm8k", "t.jsonl")


@pytest.mark.parametrize(
    ("solution", "message"),
    [
        ("the answer is 4", r"no \boxed{...} answer"),
        (r"so \boxed{\frac{1}{2}", r"its last \boxed{ is never closed"),
        (r"so \boxed{ }", r"its last \boxed{} is empty"),
    ],
)
def test_bad_math_row_names_file_row_and_column(tmp_path, solution, message):
    rows = [{"problem": "p", "solution": r"\boxed{1}"}, {"problem": "p", "solution": solution}]
    path = write_jsonl(tmp_path / "math.jsonl", rows)
    with pytest.raises(DatasetError, match=re.escape(f"{path}: row 2, column 'solution': {message}")):
        read_math_file(path, "math")


def test_empty_question_is_reported():
    table = datasets.Dataset.from_list([{"problem": "  ", "solution": r"\boxed{1}"}])
    with pytest.raises(DatasetError, match=r"m.jsonl: row 1, column 'problem': expected a non-empty question string"):
        normalize_math_dataset(table, "math", "m.jsonl")


def test_missing_column_lists_the_existing_ones(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q", "answer": "#### 1"}])
    with pytest.raises(DatasetError, match=r"g.jsonl: no column 'question' \(needed by format 'gsm8k'\); the columns are: prompt, answer"):
        read_math_file(path, "gsm8k")
    with pytest.raises(DatasetError, match=r"no column 'body' \(needed by format 'math'\); the columns are: prompt, answer"):
        read_math_file(path, "math", question_column="prompt", solution_column="body")


def test_unknown_format_and_empty_table():
    with pytest.raises(ValueError, match="unknown math data format 'aime'; expected one of plain, gsm8k, math"):
        normalize_math_dataset(datasets.Dataset.from_list([{"a": 1}]), "aime", "x")
    empty = datasets.Dataset.from_dict({"question": [], "answer": []})
    with pytest.raises(DatasetError, match="e.jsonl: the file holds no rows"):
        normalize_math_dataset(empty, "gsm8k", "e.jsonl")
    assert MATH_FORMATS == ("plain", "gsm8k", "math")


def test_reference_readers():
    assert gsm8k_reference("a\n#### 1 #### 2,500") == "2500"
    assert math_reference(r"\boxed{1} then \boxed{\frac{a}{b}}") == r"\frac{a}{b}"


# --- the sample files ---------------------------------------------------------------------------------------


def test_sample_gsm8k_arithmetic_is_right():
    """Every <<expression=result>> step of the sample solutions computes, and the final answer is a number."""
    for question, answer in GSM8K_SAMPLES:
        for expression, result in re.findall(r"<<([^=>]+)=([^>]+)>>", answer):
            assert eval(expression, {"__builtins__": {}}) == pytest.approx(float(result)), (question, expression)
        float(gsm8k_reference(answer))


def test_every_sample_reference_is_scorable_and_matches_itself(sample_files):
    reward = MathAnswerReward()
    for fmt in ("gsm8k", "math"):
        rows = read_math_file(sample_files[fmt], fmt)
        assert 20 <= len(rows) <= 30
        references = list(rows["answer"])
        right = reward(list(rows["prompt"]), [rf"So the answer is \boxed{{{a}}}." for a in references], answer=references)
        assert right == [1.0] * len(rows), fmt
        wrong = reward(list(rows["prompt"]), [r"\boxed{-12345}"] * len(rows), answer=references)
        assert wrong == [0.0] * len(rows), fmt


def test_samples_command_writes_the_files(tmp_path, capsys):
    assert main([str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["gsm8k_sample.jsonl", "math_sample.jsonl"]
    done = subprocess.run([sys.executable, "-m", "cohort.data.samples", str(tmp_path / "b")], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.count(".jsonl") == 2
    assert (tmp_path / "b" / "gsm8k_sample.jsonl").read_text() == (tmp_path / "a" / "gsm8k_sample.jsonl").read_text()
    assert main([]) == 2
