"""Run directory rules and atomic writes: a crash leaves the old or the new, never a broken one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from cohort.atomic import atomic_directory
from cohort.records import truncate_jsonl
from cohort.run_directory import RunDirectory, RunDirectoryError
from cohort.training.checkpoint import prune_checkpoints


def test_atomic_directory_replaces_or_keeps(tmp_path):
    target = tmp_path / "step-1"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["step-1"]  # no temporary leftovers


def test_a_process_killed_mid_write_leaves_no_checkpoint_behind(tmp_path):
    """SIGKILL during a slow write: the run directory shows only complete checkpoints."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from cohort.atomic import atomic_directory
        with atomic_directory(Path({str(tmp_path)!r}) / "checkpoints" / "step-2") as tmp:
            (tmp / "trainer_state.pt").write_text("partial")
            print("writing", flush=True)
            time.sleep(30)
        """
    )
    run = RunDirectory(tmp_path)
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-1" / "trainer_state.pt").write_text("complete")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert run.checkpoint_steps() == [1]
    assert run.latest_checkpoint().name == "step-1"
    assert run.prepare(resume=True, overwrite=False).name == "step-1"
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "checkpoints").iterdir())


def test_prepare_never_overwrites_a_run_silently(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.prepare(resume=False, overwrite=False) is None
    run.metrics.write_text('{"step": 1}\n')
    with pytest.raises(RunDirectoryError, match="already holds a run; pass train.resume=true"):
        run.prepare(resume=False, overwrite=False)
    with pytest.raises(RunDirectoryError, match="holds no complete checkpoint"):
        run.prepare(resume=True, overwrite=False)
    assert run.prepare(resume=False, overwrite=True) is None
    assert not run.metrics.exists()


def test_truncate_and_prune(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 8)))
    truncate_jsonl(path, 5)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    run = RunDirectory(tmp_path)
    for step in (10, 20, 30):
        (run.checkpoints / f"step-{step}").mkdir(parents=True)
        (run.checkpoints / f"step-{step}" / "trainer_state.pt").write_text("x")
    prune_checkpoints(run, keep=2)
    assert run.checkpoint_steps() == [20, 30]
