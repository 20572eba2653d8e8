"""Tasks from files: real `datasets` loading, precise errors, held-out splits, prompt templates, sampler."""

from __future__ import annotations

import json

import datasets
import pytest

from cohort.data.files import DatasetError, check_rows, read_table
from cohort.data.sampler import PromptSampler
from cohort.data.tasks import format_prompt, load_task, row_columns


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [{"prompt": f"{i}+1=", "answer": str(i + 1), "level": i % 3} for i in range(20)]


def test_jsonl_task_with_held_out_fraction(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", ROWS)
    task = load_task(str(path), test_fraction=0.25, seed=3)
    assert len(task.train) == 15 and len(task.test) == 5
    assert not set(task.train["prompt"]) & set(task.test["prompt"])
    assert task.default_rewards[0]["name"] == "exact_match"
    again = load_task(str(path), test_fraction=0.25, seed=3)
    assert again.test["prompt"] == task.test["prompt"]


def test_parquet_task_with_a_second_file_and_custom_columns(tmp_path):
    train = datasets.Dataset.from_list([{"question": "2+2=", "solution": 4}, {"question": "3+3=", "solution": 6}])
    train.to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list([{"question": "1+1=", "solution": 2}]).to_parquet(str(tmp_path / "test.parquet"))
    task = load_task(str(tmp_path / "train.parquet"), test_path=str(tmp_path / "test.parquet"), prompt_column="question", answer_column="solution")
    assert task.test[0]["question"] == "1+1=" and task.default_rewards[0]["answer_column"] == "solution"


def test_malformed_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n')
    with pytest.raises(DatasetError, match=r"bad.jsonl: row 2: not valid JSON"):
        read_table(path)


def test_missing_column_lists_the_existing_ones(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a", "answer": "1"}])
    with pytest.raises(DatasetError, match=r"no column 'prompt'; the columns are: question, answer"):
        load_task(str(path))


@pytest.mark.parametrize(
    "bad_row, column",
    [({"prompt": "", "answer": "1"}, "prompt"), ({"prompt": "x", "answer": None}, "answer"), ({"prompt": None, "answer": "1"}, "prompt")],
)
def test_malformed_row_names_file_row_and_column(tmp_path, bad_row, column):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "ok", "answer": "1"}, {"prompt": "ok2", "answer": "2"}, bad_row])
    with pytest.raises(DatasetError, match=rf"rows.jsonl: row 3, column '{column}'"):
        load_task(str(path))


def test_chat_message_prompts_are_accepted(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"}]
    table = datasets.Dataset.from_list(rows)
    check_rows(table, "mem", "prompt", "answer")
    assert format_prompt(table[0], "ignored {prompt}", "prompt") == rows[0]["prompt"]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_task(str(tmp_path / "none.jsonl"))
    (tmp_path / "data.csv").write_text("prompt,answer\n")
    with pytest.raises(DatasetError, match="unsupported file type '.csv'"):
        load_task(str(tmp_path / "data.csv"))
    with pytest.raises(DatasetError, match="neither a built-in task"):
        load_task("gsm9k")


def test_builtin_arithmetic_task_is_disjoint_and_large_enough():
    task = load_task("arithmetic")
    assert len(task.test) >= 500
    assert not set(task.test["prompt"]) & set(task.train["prompt"][:20000])
    with pytest.raises(DatasetError, match="has its own held-out split"):
        load_task("arithmetic", test_fraction=0.1)


def test_prompt_template_uses_row_columns():
    row = {"question": "2+2", "level": 1, "answer": "4"}
    assert format_prompt(row, "Level {level}: {prompt} =", "question") == "Level 1: 2+2 ="
    with pytest.raises(DatasetError, match=r"cannot be filled from the row's columns \(answer, level, question\)"):
        format_prompt(row, "{missing}", "question")
    assert row_columns([row, {**row, "level": 2}], exclude=["question"]) == {"level": [1, 2], "answer": ["4", "4"]}


def test_sampler_is_seeded_epochal_and_resumable():
    sampler = PromptSampler(10, seed=1)
    first = sampler.next_indices(7) + sampler.next_indices(7)
    assert sorted(first[:10]) == list(range(10))  # one full epoch, then the next
    state = sampler.state_dict()
    continued = sampler.next_indices(9)
    resumed = PromptSampler(10, seed=1)
    resumed.load_state_dict(state)
    assert resumed.next_indices(9) == continued
    assert PromptSampler(10, seed=2).next_indices(10) != PromptSampler(10, seed=1).next_indices(10)
    assert PromptSampler(4, seed=0, shuffle=False).next_indices(6) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError, match="belongs to a dataset of 10 rows"):
        PromptSampler(11, seed=1).load_state_dict(state)
