"""The machine a benchmark runs on: CPU, load, matmul peak; and the FLOP model of a GRPO step.

FLOPs are estimated the usual way for transformers (Kaplan et al. 2020): a forward pass costs about
2 FLOPs per matmul parameter per token, forward + backward about 6; the tokens are those each
trainer actually runs through the model (see :func:`executed_flops`). Matmul parameters are the
weights of every ``nn.Linear`` (the LM head included, the input embedding lookup excluded).
:func:`sequence_flops` counts a step from every sequence's own completion length (what long,
variable-length completions need) and adds attention's score and value products: 4 FLOPs per
(query, key) pair per unit of attention width (layers x heads x head dim) in a forward, causal
pairs only; padding is never counted, on either side, so it counts as time without FLOPs.
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


def matmul_peak(dtype: torch.dtype, threads: int, size: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """Best-of-``repeats`` FLOP/s of a ``size`` x ``size`` matmul in ``dtype`` with ``threads`` threads
    (on ``device``; on a GPU the threads do not matter and a 1024 matmul is too small to fill it: use a larger ``size``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)  # [S, S]
        b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)  # [S, S]
        torch.matmul(a, b)  # warm-up (kernel selection, page faults)
        synchronize()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            synchronize()
            best = min(best, time.perf_counter() - started)
        return 2 * size**3 / best
    finally:
        torch.set_num_threads(previous)


def matmul_parameters(model: torch.nn.Module) -> int:
    """Weights that take part in a matmul per token: every nn.Linear (LM head included)."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


def attention_width(config) -> int:
    """Layers x query heads x head dim: a forward costs 4 FLOPs per (query, key) pair per unit of it
    (2 for the score q.k, 2 for weighting the value); 0 when the config does not say."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads else 0)
    return int(layers * heads * head_dim)


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


def _causal_pairs(length: float) -> float:
    """(query, key) pairs of causal attention over ``length`` positions: 1 + 2 + ... + length."""
    return length * (length + 1) / 2


def sequence_flops(
    side: str,
    params: int,
    group_size: int,
    prompt_tokens: float,
    lengths: list[int],
    *,
    trained: list[bool] | None = None,
    beta: float = 0.0,
    mu: int = 1,
    attention: int = 0,
) -> StepFlops:
    """The FLOPs ``side`` ("cohort" or "trl") executes in one step, from each sequence's completion length.

    ``lengths``: the step's completion lengths (tokens, EOS included), ``group_size`` consecutive rows
    per prompt; ``prompt_tokens``: the mean prompt length; ``trained``: which rows cohort ran
    forward/backward on (default all; at beta = 0 it skips zero-advantage rows, and a group with
    none trained is not run at all); ``attention``: :func:`attention_width` (0 leaves attention out).

    TRL runs each prompt G times, when sampling and when training every row. cohort prefills each
    prompt once for its G samples and runs a shared prompt once per training forward (each
    completion still attends to it). Tokens cost 2 x params in a forward, 6 x with the backward;
    a token at position p (its own included) attends to p keys, 4 x ``attention`` FLOPs each in
    a forward, 12 x with the backward. Both sides: mu passes of forward + backward, plus one
    no-grad forward for pi_old when mu > 1 and one of the reference model when beta > 0.
    """
    if side not in ("cohort", "trl"):
        raise ValueError(f"side must be 'cohort' or 'trl', got {side!r}")
    if len(lengths) % group_size:
        raise ValueError(f"{len(lengths)} completion lengths are not whole groups of {group_size}")
    if trained is None or side == "trl":
        trained = [True] * len(lengths)
    if len(trained) != len(lengths):
        raise ValueError(f"{len(trained)} trained flags for {len(lengths)} completion lengths")
    lp = prompt_tokens
    prompts = len(lengths) // group_size
    if side == "trl":
        sampled_tokens = scored_tokens = sum(lp + lc for lc in lengths)
        sampled_pairs = scored_pairs = sum(_causal_pairs(lp + lc) for lc in lengths)
    else:
        groups_trained = sum(any(trained[g * group_size : (g + 1) * group_size]) for g in range(prompts))

        def completion_pairs(lc: int) -> float:  # completion positions lp+1 .. lp+lc
            return lc * lp + _causal_pairs(lc)

        sampled_tokens = prompts * lp + sum(lengths)
        sampled_pairs = prompts * _causal_pairs(lp) + sum(completion_pairs(lc) for lc in lengths)
        scored_tokens = groups_trained * lp + sum(lc for lc, t in zip(lengths, trained) if t)
        scored_pairs = groups_trained * _causal_pairs(lp) + sum(completion_pairs(lc) for lc, t in zip(lengths, trained) if t)
    extra_forwards = int(mu > 1) + int(beta > 0)
    passes = 3.0 * mu + extra_forwards  # in units of one forward
    return StepFlops(
        generation=2.0 * params * sampled_tokens + 4.0 * attention * sampled_pairs,
        training=passes * (2.0 * params * scored_tokens + 4.0 * attention * scored_pairs),
    )
