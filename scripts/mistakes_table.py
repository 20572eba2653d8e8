"""The user-mistakes table of tests/test_user_mistakes.py, run as a user runs it: each case as its own
``python -m cohort.cli`` process, with its exit code, the lines it printed on stderr, whether the
last one is the expected line, and the wall time. ``--src`` runs another checkout's code (an older
commit in a ``git worktree``) for a before/after table.

    .venv/bin/python scripts/mistakes_table.py                       # this checkout
    git worktree add /tmp/before 5bc504f
    .venv/bin/python scripts/mistakes_table.py --src /tmp/before/src  # the code of 5bc504f
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_user_mistakes import CASES, argv_of, make_mistake_files  # noqa: E402
from tiny_models import save_tiny_model  # noqa: E402


def run_case(command: str, files: Path, model: Path, out: Path, src: Path, timeout_s: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "COHORT_DEBUG": ""}
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "cohort.cli", *argv_of(command, files, model, out)], cwd=files,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        code, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, err = "timeout", (expired.stderr or b"").decode(errors="replace") if isinstance(expired.stderr, bytes) else ""
    lines = [line for line in err.splitlines() if line.strip()]
    return {"code": code, "lines": len(lines), "last": lines[-1] if lines else "", "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the source tree whose cohort runs each case")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "model", "llama", seed=0)
        (Path(tmp) / "files").mkdir()
        files = make_mistake_files(Path(tmp) / "files", model)
        print(f"cohort from {args.src}\n")
        print("| case | exit code | stderr lines | the expected one line | seconds |")
        print("|---|---|---|---|---|")
        for index, (name, command, code, pattern) in enumerate(CASES):
            result = run_case(command, files, model, Path(tmp) / f"out-{index}", args.src, args.timeout)
            one_line = result["lines"] == 1 and result["last"].startswith("cohort: error: ") and re.search(pattern, result["last"])
            print(f"| {name} | {result['code']} | {result['lines']} | {'yes' if one_line else 'no: ' + result['last'][:90].replace('|', '/')} "
                  f"| {result['seconds']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
