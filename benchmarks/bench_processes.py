"""What the benchmark drivers share about processes: a measured fresh worker process, this
process's memory, and the argument checks every comparison needs.

No torch import here: the drivers stay light until a worker loads the models.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

_RU_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux


def run_measured(script: Path, spec: dict[str, Any], workdir: Path, index: int) -> dict[str, Any]:
    """Run ``script --worker SPEC RESULT`` in a fresh Python process with ``spec`` (``side``,
    ``seed``, ``threads`` and the rest); its result plus the process's peak RSS (bytes)."""
    spec_path, result_path, log_path = (workdir / f"run{index}.{suffix}" for suffix in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(script), "--worker", str(spec_path), str(result_path)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0 or not result_path.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        sys.exit(f"the {spec['side']} run (seed {spec['seed']}) failed with exit code {returncode}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["peak_rss"] = usage.ru_maxrss * _RU_MAXRSS_UNIT
    return result


def current_rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_so_far() -> int:
    """This process's RSS high-water mark so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RU_MAXRSS_UNIT


def check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...]) -> None:
    """The checks every GRPO comparison needs, naming the flag: ``positive`` flags >= 1, at least
    two steps (the first is warm-up), groups of at least two, ``--model`` an existing directory."""
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is warm-up and is not timed)")
    if args.group_size < 2:
        parser.error(f"--group-size must be >= 2 (GRPO needs a group), got {args.group_size}")
    if args.model and not Path(args.model).is_dir():
        parser.error(f"--model {args.model!r} is not a directory")
