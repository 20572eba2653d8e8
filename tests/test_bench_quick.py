"""benchmarks/vs_trl.py --quick end to end: real subprocesses, real cohort and TRL trainers (needs TRL)."""

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


@pytest.mark.slow  # about 20-40 s: two training subprocesses that import torch, transformers and TRL
@needs_trl
def test_quick_run_measures_both_trainers(tmp_path):
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for expected in ("cohort vs TRL", "median step time (s)", "peak RSS (MiB)", "cohort's step, median seconds per phase",
                     "matmul peak", "targets:", "load average after"):
        assert expected in done.stdout, f"{expected!r} missing from the report:\n{done.stdout}"

    summary = json.loads(out.read_text())
    steps = summary["settings"]["steps"]
    assert [run["side"] for run in summary["runs"]] == ["cohort", "trl"]
    for raw in summary["raw"]:
        assert len(raw["step_s"]) == len(raw["reward"]) == len(raw["completion_tokens"]) == steps
        assert all(seconds > 0 for seconds in raw["step_s"])
        assert all(0.0 <= reward <= 1.0 for reward in raw["reward"])  # exact match scores 0 or 1
        assert raw["peak_rss"] >= raw["rss_before_train"] > 0
    cohort = next(raw for raw in summary["raw"] if raw["side"] == "cohort")
    assert set(cohort["split"]) == {"rollout", "reward", "logprob", "train"}
    medians = summary["medians"]
    assert medians["median_step_s"]["cohort"] > 0 and medians["median_step_s"]["trl"] > 0
    assert medians["median_step_s"]["ratio"] == pytest.approx(
        medians["median_step_s"]["cohort"] / medians["median_step_s"]["trl"]
    )
    assert summary["machine"]["matmul_peak_flops"]["float32"] > 0


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
