"""The machine a benchmark runs on: CPU, load, matmul peak; and the FLOP model of a GRPO step.

FLOPs are estimated the usual way for transformers (Kaplan et al. 2020): a forward pass costs about
2 FLOPs per matmul parameter per token, forward + backward about 6; the tokens are those each
trainer actually runs through the model (see :func:`executed_flops`). Matmul parameters are the
weights of every ``nn.Linear`` (the LM head included, the input embedding lookup excluded);
attention's score/value products are left out, which is fair for sequences this short.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The matrix / vector extensions that decide fp32 vs bf16 speed (avx2, avx512f, avx512_bf16, amx_*)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")
    return [flag for flag in wanted if flag in flags]


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages (what `uptime` prints)."""
    return os.getloadavg()


def machine_summary(threads: int) -> dict[str, object]:
    """Everything the report says about where and when it ran."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_before": load_average(),
    }


def matmul_peak(dtype: torch.dtype, threads: int, size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of a ``size`` x ``size`` matmul in ``dtype`` with ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(dtype)  # [S, S]
        b = torch.randn(size, size, generator=generator).to(dtype)  # [S, S]
        torch.matmul(a, b)  # warm-up (kernel selection, page faults)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - started)
        return 2 * size**3 / best
    finally:
        torch.set_num_threads(previous)


def matmul_parameters(model: torch.nn.Module) -> int:
    """Weights that take part in a matmul per token: every nn.Linear (LM head included)."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


@dataclass(frozen=True)
class StepFlops:
    """FLOPs one trainer executes in a step: sampling (2·N per token) and scoring + updating (6·N per token)."""

    generation: float
    training: float

    @property
    def total(self) -> float:
        return self.generation + self.training


def executed_flops(
    side: str,
    params: int,
    prompts: int,
    group_size: int,
    prompt_tokens: float,
    completion_tokens: float,
    *,
    trained_frac: float = 1.0,
    beta: float = 0.0,
    mu: int = 1,
) -> StepFlops:
    """The matmul FLOPs ``side`` ("cohort" or "trl") executes in one step, padding ignored.

    Per sequence: Lp prompt tokens (mean ``prompt_tokens``) and Lc completion tokens (mean
    ``completion_tokens``). TRL repeats each prompt G times, so it runs every prompt G times when
    sampling and again when training, on every sequence. cohort prefills each prompt once for its G
    samples, trains only the ``trained_frac`` of sequences with a non-zero advantage (beta = 0), and
    runs a shared prompt once per training forward. Both: mu passes of forward+backward, plus a
    no-grad forward for pi_old when mu > 1 and one for the reference model when beta > 0.
    """
    n = prompts * group_size
    if side == "trl":
        sampled = n * (prompt_tokens + completion_tokens)
        scored = n * (prompt_tokens + completion_tokens)
    elif side == "cohort":
        sampled = prompts * prompt_tokens + n * completion_tokens
        scored = trained_frac * n * (prompt_tokens / group_size + completion_tokens)
    else:
        raise ValueError(f"side must be 'cohort' or 'trl', got {side!r}")
    extra_forwards = int(mu > 1) + int(beta > 0)
    return StepFlops(generation=2.0 * params * sampled, training=(6.0 * mu + 2.0 * extra_forwards) * params * scored)
