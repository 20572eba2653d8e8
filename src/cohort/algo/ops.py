"""Masked reductions and per-token log-probabilities.

Masks are boolean and ``True`` means "this token counts". Masked positions may hold garbage
(NaN, inf); every function here selects with ``torch.where`` so garbage never reaches a result
or a gradient.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ROWS = 1024


def _check_mask(values: torch.Tensor, mask: torch.Tensor, name: str = "mask") -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = counts), got dtype {mask.dtype}")
    if mask.shape != values.shape:
        raise ValueError(f"{name} must have the shape of values {tuple(values.shape)}, got {tuple(mask.shape)}")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is True (over ``dim``, or everything when None).

    >>> masked_sum(torch.tensor([1.0, float("nan")]), torch.tensor([True, False]))
    tensor(1.)
    """
    _check_mask(values, mask)
    selected = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 (not NaN) where nothing counts.

    >>> masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[True, True], [False, False]]), dim=1)
    tensor([2., 0.])
    """
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(v - mean) / sqrt(var + eps)`` over the masked entries (sample variance, as verl's
    ``masked_whiten``); 0 where ``mask`` is False. With fewer than two entries only the mean is removed.

    values: [...]; mask: [...] bool -> [...]
    """
    count = mask.sum()
    mean = masked_mean(values, mask)
    centred = torch.where(mask, values - mean, torch.zeros((), dtype=values.dtype, device=values.device))
    variance = centred.square().sum() / (count - 1).clamp(min=1).to(values.dtype)
    scale = torch.where(count > 1, torch.rsqrt(variance + eps), torch.ones((), dtype=values.dtype, device=values.device))
    return centred * scale


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Log-probability of ``tokens`` under ``softmax(logits / temperature)``, in float32.

    ``logits[..., v]`` must already be aligned with ``tokens`` (the logit row that predicts each
    token). Rows are processed ``chunk_rows`` at a time, so at most ``chunk_rows x V`` float32
    values exist at once instead of a full-batch log-softmax.

    logits: [..., V]; tokens: [...] (long) -> [...] float32
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"tokens must have the shape of logits without the vocabulary dim {tuple(logits.shape[:-1])}, "
            f"got {tuple(tokens.shape)}"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [N, V]
    flat_tokens = tokens.reshape(-1, 1)  # [N, 1]
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_rows):
        chunk = flat_logits[start : start + chunk_rows].float() / temperature  # [n, V]
        picked = chunk.gather(-1, flat_tokens[start : start + chunk_rows]).squeeze(-1)  # [n]
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))  # [n]
    if not pieces:
        return torch.zeros(tokens.shape, dtype=torch.float32, device=logits.device)
    return torch.cat(pieces).reshape(tokens.shape)  # [...]


def entropy_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits / temperature)`` per position, in float32, chunked.

    logits: [..., V] -> [...] float32
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [N, V]
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_rows):
        log_p = torch.log_softmax(flat_logits[start : start + chunk_rows].float() / temperature, dim=-1)  # [n, V]
        pieces.append(-(log_p.exp() * log_p).sum(-1))  # [n]
    if not pieces:
        return torch.zeros(logits.shape[:-1], dtype=torch.float32, device=logits.device)
    return torch.cat(pieces).reshape(logits.shape[:-1])  # [...]
