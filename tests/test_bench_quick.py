"""The benchmarks end to end (vs_trl.py through the matrix's quick cells, lora_vs_full.py): real subprocesses, real trainers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_trl.py"

needs_trl = pytest.mark.skipif(
    importlib.util.find_spec("trl") is None, reason="TRL is not installed (pip install -e '.[bench]')"
)


def test_missing_trl_is_a_clear_error(tmp_path):
    """With trl hidden from the import system, the script says what to install and exits non-zero."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoTrl:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'trl' or name.startswith('trl.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoTrl())\n"
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "needs TRL" in done.stderr and "pip install" in done.stderr


MATRIX = SCRIPT.with_name("matrix.py")


@pytest.mark.slow(seconds=30)  # about 30-60 s: four training subprocesses (two cells x cohort and TRL)
@needs_trl
def test_quick_matrix_reports_every_cell(tmp_path):
    out = tmp_path / "matrix.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--matrix", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for expected in ("cohort vs TRL", "median step time (s)", "peak RSS (MiB)", "cohort's step, median seconds per phase",
                     "matmul peak", "targets:", "load average after"):  # each cell prints vs_trl.py's full report
        assert done.stdout.count(expected) >= 2, f"{expected!r} missing from a cell's report:\n{done.stdout}"
    summary = json.loads(out.read_text())
    names = [cell["cell"]["name"] for cell in summary["cells"]]
    assert names == ["quick-tiny-b0.04", "quick-long-b0"]
    for cell in summary["cells"]:
        medians = cell["medians"]
        for key in ("median_step_s", "tokens_per_s", "peak_rss_mib", "achieved_gflops"):
            assert medians[key]["cohort"] > 0 and medians[key]["trl"] > 0, (cell["cell"]["name"], key, medians[key])
            assert medians[key]["ratio"] == pytest.approx(medians[key]["cohort"] / medians[key]["trl"])
        assert set(cell["cohort_split_s"]) == {"rollout", "reward", "logprob", "train", "other"}
        assert set(cell["matrix_targets"]) == {"step_ratio", "memory", "reward", "peak_share"}
        assert [run["side"] for run in cell["runs"]] == ["cohort", "trl"]
        assert cell["machine"]["matmul_peak_flops"]["float32"] > 0
        for raw in cell["raw"]:  # every step's times, rewards and completion lengths, within the budget
            steps = cell["settings"]["steps"]
            assert len(raw["lengths"]) == len(raw["step_s"]) == len(raw["reward"]) == len(raw["completion_tokens"]) == steps
            assert all(seconds > 0 for seconds in raw["step_s"]) and all(0.0 <= r <= 1.0 for r in raw["reward"])
            assert raw["peak_rss"] >= raw["rss_before_train"] > 0
            budget = cell["settings"]["max_new_tokens"]
            assert all(1 <= n <= budget for step in raw["lengths"] for n in step)
    tiny, long = summary["cells"]
    assert tiny["settings"]["beta"] > 0 and tiny["cohort_split_s"]["logprob"] > 0  # the reference forward ran
    assert long["settings"]["reward"] == "first_line" and long["model"]["params"] > 5e6

    # one markdown table of the whole matrix, a row per cell, with a verdict per target
    table = done.stdout[done.stdout.index("## Benchmark matrix"):]
    rows = [line for line in table.splitlines() if line.startswith("| quick-")]
    assert [row.split("|")[1].strip() for row in rows] == names
    for row in rows:
        verdicts = [field.strip() for field in row.strip("|").split("|")][-4:]
        assert all(v in ("HOLDS", "**DOES NOT HOLD**", "n/a") for v in verdicts), row
    assert rows[0].rstrip(" |").endswith("n/a")  # no peak target for the 0.44 M model
    assert summary["table"].splitlines()[2:] == rows and summary["complete"]


LORA_SCRIPT = SCRIPT.with_name("lora_vs_full.py")


@pytest.mark.slow(seconds=20)  # about 20-30 s: a full and a LoRA training subprocess, then both in one process
def test_lora_vs_full_quick_run_measures_both_sides(tmp_path):
    pytest.importorskip("peft", reason="PEFT is not installed (pip install -e '.[lora]')")
    out = tmp_path / "lora.json"
    done = subprocess.run([sys.executable, str(LORA_SCRIPT), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| trainable parameters |" in done.stdout and "per-pair step ratio LoRA / full" in done.stdout
    summary = json.loads(out.read_text())
    assert [run["side"] for run in summary["runs"]] == ["full", "lora"]
    medians = summary["medians"]
    full, lora = medians["trainable_params"]["full"], medians["trainable_params"]["lora"]
    assert 0 < lora < full  # adapters only
    assert medians["reference_weights_mib"]["lora"] == 0 < medians["reference_weights_mib"]["full"]  # no second copy
    assert medians["adamw_state_mib"]["lora"] < medians["adamw_state_mib"]["full"]
    paired = summary["paired"]
    assert all(len(paired["raw"][side]["step"]) == summary["settings"]["paired_steps"] for side in ("full", "lora"))
    assert paired["step_ratio_median"] > 0
