"""`cohort eval`: one or more models on a held-out split, side by side, and its one-line errors."""

from __future__ import annotations

import json

import pytest
from test_trainer import run_config, train

from cohort.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama_dir):
    task = tmp_path_factory.mktemp("evaltask") / "sums.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    out = tmp_path_factory.mktemp("evalrun") / "run"
    train(run_config(out, tiny_llama_dir, task, "train.steps=2", "train.eval_before=false", "train.eval_after=false"))
    return out, task


def test_two_models_side_by_side(trained_run, tiny_llama_dir, tmp_path, capsys):
    run_dir, _ = trained_run
    out = tmp_path / "cmp"
    code = main(["eval", str(tiny_llama_dir), str(run_dir), "--samples", "4", "--k", "1,2,4", "--limit", "5", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("greedy accuracy", "pass@1", "pass@4", "maj@4", "change", "mean length"):
        assert name in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == [str(tiny_llama_dir), str(run_dir)]
    assert summary["models"][1]["path"].endswith("final")
    first = summary["models"][0]["summary"]
    assert first["num_problems"] == 5 and first["num_samples"] == 4 and set(first["pass_at_k"]) == {"1", "2", "4"}
    assert first["pass_at_k"]["1"] <= first["pass_at_k"]["2"] <= first["pass_at_k"]["4"]
    problems = [json.loads(line) for line in (out / "problems_0.jsonl").read_text().splitlines()]
    assert len(problems) == 5 and len(problems[0]["completions"]) == 4


def test_a_directory_that_is_not_a_model_is_a_one_line_error(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", str(empty), "--config", str(run_dir / "config.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cohort: error:") and "\n" not in err and "config.json" in err


def test_a_task_without_held_out_split_is_a_one_line_error(trained_run, tiny_llama_dir, tmp_path, capsys):
    _, task = trained_run
    code = main(["eval", str(tiny_llama_dir), f"model.path={tiny_llama_dir}", f"data.task={task}", "data.test_fraction=0",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "has no held-out split" in err and "\n" not in err
