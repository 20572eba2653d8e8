"""What running vLLM inside the trainer's process takes: the environment it reads at import, its
start-up output held back, and the process-wide state it changes put back after every call."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def quiet_defaults(device: torch.device) -> None:
    """Environment vLLM reads at import: in-process engine, errors only, no thread pinning on CPU."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this process (weights by reference)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its start-up notes and warnings are not the user's
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # the trainer's threads stay where they are


@contextmanager
def start_up_output_held() -> Iterator[None]:
    """vLLM's start-up writes notes, progress bars and C++ warnings straight to the terminal (file
    descriptors 1 and 2, below Python's reach): hold them in a file, shown only if the start fails."""
    with tempfile.TemporaryFile(mode="w+b") as held, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its dependencies' deprecation notices at import
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        failure = None
        try:
            yield
        except Exception as err:
            failure = err
        finally:
            _restore_output(saved)
        if failure is not None:
            held.seek(0)
            tail = held.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"vLLM failed to start ({failure}); its output:\n{tail}") from failure


def _restore_output(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for target, copy in zip((1, 2), saved):
        os.dup2(copy, target)
        os.close(copy)


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Undo what starting or running vLLM changes in the whole process: it re-seeds the global
    random generators (torch, numpy, random) and draws from torch's, replaces
    ``torch.set_num_threads`` with a stub and sets the thread count, and sets environment variables
    (``LD_PRELOAD`` among them) that would reach every subprocess started later (reward sandboxes)."""
    environment, threads, set_threads = dict(os.environ), torch.get_num_threads(), torch.set_num_threads
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            os.environ.clear()
            os.environ.update(environment)
