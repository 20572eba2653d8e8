"""Run untrusted Python programs in a sandbox: one process per program, in a throwaway directory.

Secure by default: a :class:`Sandbox` uses bubblewrap with a bound on the number of processes (see
:mod:`cohort.rewards.sandbox.layers` for what each layer guarantees). With ``isolation="auto"`` (the default)
or ``"bubblewrap"`` it raises :class:`IsolationUnavailable` when bubblewrap is missing or cannot
work here, naming what is missing and how to install it; it never falls back to a weaker layer. The
weaker layers (``"unshare"``, ``"setuid"``, ``"none"``) run only when named explicitly, and the
first sandbox of each in a process logs one warning. The bwrap binary is ``bwrap`` on PATH or the
file named by the environment variable ``COHORT_BWRAP``.

Every layer adds resource limits set inside the sandbox just before the program starts
(RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE), a seccomp filter
that closes the kernel's channels between sandboxes (:mod:`cohort.rewards.sandbox.seccomp`; without
libseccomp no layer starts), a wall-clock limit enforced from outside, output capped by
RLIMIT_FSIZE on the stdout/stderr files (the host never reads more than the cap; the files are the
host's, mode 0600), and an environment built from scratch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cohort.rewards.sandbox.commands import SANDBOX_DIR
from cohort.rewards.sandbox.judges import close_pool
from cohort.rewards.sandbox.layers import (
    ISOLATIONS,
    NOBODY,
    IsolationUnavailable,
    Layer,
    SandboxError,
    SandboxLimits,
    candidate_layers,
    find_bwrap,
    probes_failed,
)
from cohort.rewards.sandbox.processes import SandboxProcess, decode_status

__all__ = [
    "ISOLATIONS",
    "BudgetExceeded",
    "NOBODY",
    "SANDBOX_DIR",
    "ExecutionRequest",
    "ExecutionResult",
    "IsolationUnavailable",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxProcess",
    "sandbox_isolation",
]

logger = logging.getLogger(__name__)

PROGRAM_NAME = "main.py"
T = TypeVar("T")
_warned_kinds: set[str] = set()  # weak layers already announced in this process
_warned_lock = threading.Lock()


class BudgetExceeded(Exception):
    """A program used up its time budget before every one of its tests was decided (it scores 0).

    Not a SandboxError: the sandbox worked, the program was too slow.
    """


@dataclass(frozen=True)
class ExecutionRequest:
    """One program to run: its source and what it reads on stdin (None: an empty stdin)."""

    source: str
    stdin: str | None = None


@dataclass(frozen=True)
class ExecutionResult:
    """What one sandboxed run did. Output is cut at ``max_output_bytes`` (flagged as truncated)."""

    exit_code: int | None  # None when the program was killed by a signal
    signal: int | None  # the signal that ended it (SIGKILL after a wall-clock timeout)
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool  # killed by the host for running past wall_time_s
    wall_time_s: float

    @property
    def succeeded(self) -> bool:
        """True when the program ran to completion and exited with status 0."""
        return self.exit_code == 0 and not self.timed_out


class Sandbox:
    """Runs Python programs under resource limits and adequate isolation (or the layer named explicitly)."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        workers: int | None = None,
        isolation: str = "auto",
        python: str | None = None,
        tmp_root: str | os.PathLike[str] | None = None,
    ) -> None:
        """``isolation``: "auto" (= adequate bubblewrap, else IsolationUnavailable) or a layer by name.

        ``python`` is the interpreter that runs the programs (default: this one); ``tmp_root`` is
        where the throwaway directories are made (default: the system temp directory).
        """
        self.limits = limits if limits is not None else SandboxLimits()
        if not isinstance(self.limits, SandboxLimits):
            raise ValueError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.python = os.path.abspath(python or sys.executable)
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise ValueError(f"python {self.python!r} is not an executable file")
        self.tmp_root = Path(tmp_root) if tmp_root is not None else Path(tempfile.gettempdir())
        if not self.tmp_root.is_dir():
            raise ValueError(f"tmp_root {str(self.tmp_root)!r} is not an existing directory")
        self._layer = _layer_for(isolation, self.python, str(self.tmp_root))
        self._started_lock = threading.Lock()
        self._started_total = 0
        _announce(self._layer)

    @property
    def isolation(self) -> str:
        """The active isolation layer in words, e.g. for the run log."""
        return self._layer.describe()

    @property
    def isolation_adequate(self) -> bool:
        """Whether the active layer is fit for untrusted code (bubblewrap with a process limit)."""
        return self._layer.adequate

    @property
    def isolation_kind(self) -> str:
        """The active layer's short name: bubblewrap, unshare, setuid or none."""
        return self._layer.kind

    @property
    def sandboxes_started(self) -> int:
        """How many sandboxes this object has started (for throughput measurements)."""
        return self._started_total

    def close(self) -> None:
        """Kill the idle judge servers of assertion tests (see :mod:`cohort.rewards.sandbox.judges`).

        Optional: they are killed when this object is collected or the process ends, and a later
        assertion test starts new ones.
        """
        close_pool(self)

    def run(self, source: str, stdin: str | None = None, *, wall_time_s: float | None = None) -> ExecutionResult:
        """Run one program and return what it did; raises SandboxError only if the sandbox failed.

        ``wall_time_s`` overrides the limits' wall-clock limit for this run (e.g. a budget's rest).
        """
        if not isinstance(source, str):
            raise ValueError(f"source must be a str, got {type(source).__name__}")
        if stdin is not None and not isinstance(stdin, str):
            raise ValueError(f"stdin must be a str or None, got {type(stdin).__name__}")
        limits = self.limits if wall_time_s is None else dataclasses.replace(self.limits, wall_time_s=wall_time_s)
        with self.start({PROGRAM_NAME: source}, PROGRAM_NAME, stdin=stdin, limits=limits) as process:
            timed_out = not process.wait(limits.wall_time_s - process.elapsed)
            process.stop()
            if not process.started and not timed_out:
                err_text, _ = process.output("stderr", 2000)
                raise SandboxError(f"the sandbox did not start the program (exit status {process.returncode}): {err_text.strip()}")
            exit_code, sig = decode_status(process.returncode, self._layer)
            out, out_cut = process.output("stdout", self.limits.max_output_bytes)
            err, err_cut = process.output("stderr", self.limits.max_output_bytes)
        return ExecutionResult(exit_code, sig, out, err, out_cut, err_cut, timed_out, process.wall_time_s)

    def start(
        self,
        files: Mapping[str, str | bytes],
        script: str,
        args: Sequence[str] = (),
        *,
        pass_fds: Sequence[int] = (),
        stdin: str | None = None,
        limits: SandboxLimits | None = None,
        role: str = "program",
    ) -> SandboxProcess:
        """Start ``script`` (one of ``files``) in a sandbox of its own and return it running.

        The caller waits for it and must close it (``with``). ``pass_fds`` reach the script under the
        same numbers; ``role="judge"`` gives a read-only directory and, under unshare and setuid, a
        uid other than the programs' (see :class:`~cohort.rewards.sandbox.processes.SandboxProcess`).
        """
        with self._started_lock:
            self._started_total += 1
        return SandboxProcess(
            self._layer, self.python, limits or self.limits, self.tmp_root, files, script, args,
            pass_fds=pass_fds, stdin=stdin, role=role,
        )  # fmt: skip

    def run_many(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        """Run programs in parallel on ``workers`` threads (each waiting on one sandbox); results in order."""
        requests = list(requests)
        for i, request in enumerate(requests):
            if not isinstance(request, ExecutionRequest):
                raise ValueError(f"requests[{i}] must be an ExecutionRequest, got {type(request).__name__}")
        return self.parallel([functools.partial(self.run, r.source, r.stdin) for r in requests])

    def parallel(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Call each job on one of ``workers`` threads (jobs that wait on sandboxes); results in order."""
        if not jobs:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="sandbox")
        try:
            futures = [pool.submit(job) for job in jobs]
            return [future.result() for future in futures]
        finally:
            # On an error or an interrupt, drop queued runs; running ones end within their own limits.
            pool.shutdown(wait=True, cancel_futures=True)


def _layer_for(isolation: str, python: str, tmp_root: str) -> Layer:
    """The layer a sandbox asking for ``isolation`` gets; IsolationUnavailable (saying why) if none works.

    The bwrap binary is looked up on every call ($COHORT_BWRAP, PATH); the probing is cached.
    """
    bwrap = find_bwrap() if isolation in ("auto", "bubblewrap") else None
    return _detect_layer(isolation, python, tmp_root, bwrap)


@functools.lru_cache(maxsize=None)
def _detect_layer(isolation: str, python: str, tmp_root: str, bwrap: str | None) -> Layer:
    """The strongest layer of ``isolation`` that runs a probe program correctly here (cached)."""
    probe = SandboxLimits(wall_time_s=30.0, cpu_time_s=10)
    failures = []
    for layer in candidate_layers(isolation, bwrap):
        try:
            with SandboxProcess(layer, python, probe, Path(tmp_root), {PROGRAM_NAME: "print('probe-ok')"}, PROGRAM_NAME) as process:
                exited = process.wait(probe.wall_time_s)
                process.stop()
                out, _ = process.output("stdout", 100)
                err, _ = process.output("stderr", 300)
        except SandboxError as error:
            failures.append(f"{layer.describe()}: {error}")
            continue
        if exited and process.started and process.returncode == 0 and out == "probe-ok\n":
            if failures:
                logger.info("code sandbox: stronger isolation layers failed here: %s", "; ".join(failures))
            return layer
        failures.append(f"{layer.describe()}: probe exit {process.returncode}, stderr {err[-300:]!r}")
    raise probes_failed(isolation, python, failures)


def _announce(layer: Layer) -> None:
    """Log the layer in use; a weak one (named explicitly) with one warning per kind and process."""
    if layer.adequate:
        logger.info("code sandbox isolation: %s", layer.describe())
        return
    with _warned_lock:
        if layer.kind in _warned_kinds:
            return
        _warned_kinds.add(layer.kind)
    logger.warning(
        "code sandbox: isolation %r (chosen explicitly) is NOT ADEQUATE for untrusted code: %s. "
        "Install bubblewrap (`sudo apt-get install bubblewrap` or `make system-deps`) and use isolation='auto'.",
        layer.kind,
        layer.describe(),
    )


def sandbox_isolation(python: str | None = None) -> str:
    """The isolation an "auto" sandbox gets on this machine, in words; IsolationUnavailable if none."""
    interpreter = os.path.abspath(python or sys.executable)
    layer = _layer_for("auto", interpreter, tempfile.gettempdir())
    _announce(layer)
    return layer.describe()
