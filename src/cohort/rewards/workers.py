"""Killable worker processes: the one deadline that holds inside a C call.

A Python signal handler (the scorer's SIGALRM) runs only between bytecodes, so one long C call —
sympy computing ``9**387420489`` inside math-verify, a user's C extension — cannot be interrupted
from inside the process that makes it; only killing that process ends it. Work that may do that runs
here: in a small pool of worker processes, where a task still running at its deadline is killed
with its process, and the process is replaced.

The pool is pebble's ``ProcessPool``: a well-kept library that does exactly this (a task's timeout
counts from when a worker takes it, the worker is then stopped and replaced, a worker that dies fails
only its own task), where ``concurrent.futures`` can only break the whole pool. Settings of ours:

* Workers start through the ``forkserver`` method (``spawn`` where there is none): forking the
  trainer itself, a process with torch's thread pools and CUDA state, is unsafe. The fork server is a
  clean single-threaded process, started once per process that uses a pool, that imports the
  ``preload`` modules once; a new worker is then a fork of it (~20 ms to its first task here), not a
  fresh interpreter (~0.3 s). The fork server is shared by the whole process: if something else
  started it first, a new worker imports the modules itself (as under ``spawn``), slower but the same.
* A worker does not re-run the main script. multiprocessing has every ``spawn``/``forkserver`` child
  do that, so that functions defined there can be sent to it, which is why scripts need an
  ``if __name__ == "__main__":`` guard; a worker here only runs functions of importable modules, and
  re-running a training script without the guard would train again inside every worker. So the
  preparation data of processes named ``cohort-reward-worker`` leaves the main script out
  (:func:`_preparation_data`, wrapping multiprocessing's ``spawn.get_preparation_data``); other
  processes are untouched.
* SIGTERM keeps its default action in a worker (pebble would run a Python handler, which cannot run
  during a C call and would leave the kill to its SIGKILL three seconds later).

Pools are stopped when the interpreter exits (an ``atexit`` hook of this module).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from multiprocessing import spawn
from typing import Any

from pebble import ProcessExpired, ProcessPool

logger = logging.getLogger(__name__)

WORKER_NAME = "cohort-reward-worker"
_PRELOAD: set[str] = {"cohort.rewards.workers"}
_LOCK = threading.Lock()
_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_STDLIB_PREPARATION_DATA = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """multiprocessing's preparation data for a new process, without the main script for ours
    (see the module docstring): a worker keeps the fork server's ``__main__`` and runs no user code."""
    data = _STDLIB_PREPARATION_DATA(name)
    if name == WORKER_NAME:
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _preparation_data


class _NamingContext:
    """A multiprocessing context whose processes are named WORKER_NAME (pebble names its own)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (multiprocessing's name)
        kwargs["name"] = WORKER_NAME
        return self.base.Process(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


@dataclass(frozen=True)
class Outcome:
    """What became of one task: its ``value``, or ``timed_out``, or ``error`` (text) when it raised,
    its worker died (a crash, the kernel's OOM killer) or it was cancelled."""

    value: Any = None
    timed_out: bool = False
    error: str | None = None


@dataclass(frozen=True)
class _TaskError:
    """An exception raised by a task's function, as text (it crosses back from the worker)."""

    text: str


def _guarded(function: Callable[..., Any], *args: Any) -> Any:
    """Runs in a worker: ``function(*args)``, with an exception returned as a :class:`_TaskError`, so
    that every exception the parent sees is the pool's (a TimeoutError is always a deadline)."""
    try:
        return function(*args)
    except Exception as err:
        return _TaskError(f"{type(err).__name__}: {err}")


def _worker_start(initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Runs first in every worker: SIGTERM kills at once, even inside a C call; then the pool's own
    initializer, whose failure is left for the tasks to report (pebble would respawn a worker whose
    initializer raises, forever)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception:  # the first task meets the same error and reports it
            pass


def _context(preload: Sequence[str]) -> Any:
    """The multiprocessing context the workers start from (see the module docstring). The fork
    server preloads our modules only: not ``__main__``, Python's default, which would run the main
    script in the fork server once CPython imports it there (3.13.8, 3.14.1; gh-126631)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return _NamingContext(multiprocessing.get_context("spawn"))
    context = multiprocessing.get_context("forkserver")
    with _LOCK:
        _PRELOAD.update(preload)
        context.set_forkserver_preload(sorted(_PRELOAD))
    return _NamingContext(context)


class WorkerPool:
    """``workers`` killable worker processes, started on first use.

    ``preload``: modules the workers need (the fork server imports them once). ``initializer(*initargs)``
    runs in each new worker, outside any task's deadline (e.g. to build a reward once per worker).
    """

    def __init__(self, workers: int = 1, *, preload: Sequence[str] = (), initializer: Callable[..., Any] | None = None,
                 initargs: tuple = ()) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.workers = workers
        self.preload = tuple(preload)
        self._initializer = (initializer, tuple(initargs))
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        _POOLS.add(self)

    def _running(self) -> ProcessPool:
        """The pebble pool, made (again, if a broken one stopped) when needed."""
        with self._lock:
            if self._pool is None or not self._pool.active:
                if self._pool is not None:
                    logger.warning("a reward worker pool stopped working; starting a new one")
                    self._pool.stop()
                self._pool = ProcessPool(max_workers=self.workers, initializer=_worker_start,
                                         initargs=self._initializer, context=_context(self.preload))
            return self._pool

    def run(self, function: Callable[..., Any], calls: Sequence[tuple], timeout_s: float) -> list[Outcome]:
        """``function(*args)`` for each ``args`` in ``calls``, spread over the workers; each call is
        killed (with its worker) once it has run ``timeout_s``. ``function`` must be importable by
        name: a module-level function of a module other than the main script, which workers do not
        run. An exception while waiting (the scorer's deadline, Ctrl-C) cancels what has not finished,
        killing the workers still busy with it."""
        if getattr(function, "__module__", None) in ("__main__", "__mp_main__"):
            raise ValueError(f"{function.__qualname__} is defined in the main script, which reward workers do not "
                             "run: move it to a module")
        pool = self._running()
        futures = [pool.schedule(_guarded, args=(function, *args), timeout=timeout_s) for args in calls]
        try:
            return [_outcome(future) for future in futures]
        finally:
            for future in futures:
                future.cancel()  # no-op once done; a running task's worker is stopped

    def close(self) -> None:
        """Stop the workers now (their running tasks are killed)."""
        with self._lock:
            if self._pool is not None:
                self._pool.stop()
                self._pool.join()
                self._pool = None


def _outcome(future: Any) -> Outcome:
    try:
        value = future.result()
    except TimeoutError:
        return Outcome(timed_out=True)
    except ProcessExpired as err:
        return Outcome(error=f"its worker process died (exit code {err.exitcode})")
    except CancelledError:
        return Outcome(error="cancelled")
    except Exception as err:  # the pool's own trouble (e.g. arguments that cannot be pickled)
        return Outcome(error=f"{type(err).__name__}: {err}")
    if isinstance(value, _TaskError):
        return Outcome(error=value.text)
    return Outcome(value=value)


_SHARED: dict[tuple, WorkerPool] = {}


def shared_pool(name: str, workers: int, preload: Sequence[str] = ()) -> WorkerPool:
    """The process-wide pool ``name`` with ``workers`` workers, shared by every reward that asks for it
    (the training and the evaluation copies of a reward use the same workers)."""
    with _LOCK:
        key = (name, workers, tuple(preload))
        if key not in _SHARED:
            _SHARED[key] = WorkerPool(workers, preload=preload)
        return _SHARED[key]


@atexit.register
def _stop_pools() -> None:
    """At exit, stop every pool: multiprocessing would otherwise wait for the workers forever (they
    wait for tasks), and pebble's own exit hook stops only the workers it named."""
    for pool in list(_POOLS):
        pool.close()
