"""Evaluation metrics: unbiased pass@k (docs/spec.md §9.1) and majority-vote maj@k (docs/spec.md §9.2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import torch


def pass_at_k(num_samples: torch.Tensor, num_correct: torch.Tensor, k: int) -> torch.Tensor:
    """Unbiased pass@k per problem, ``1 - C(n-c, k) / C(n, k)``, in the stable product form.

    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, and exactly 1 when ``n - c < k`` (Chen et al. 2021).

    num_samples (n), num_correct (c): [P] integer -> [P] float64

    >>> pass_at_k(torch.tensor([10, 10]), torch.tensor([3, 0]), 5)
    tensor([0.9167, 0.0000], dtype=torch.float64)
    """
    n = torch.as_tensor(num_samples)
    c = torch.as_tensor(num_correct)
    if n.dtype.is_floating_point or c.dtype.is_floating_point:
        raise ValueError("num_samples and num_correct must be integer counts")
    if n.shape != c.shape or n.dim() != 1:
        raise ValueError(f"num_samples and num_correct must be 1-D of one shape, got {tuple(n.shape)} and {tuple(c.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if bool((c < 0).any()) or bool((c > n).any()):
        raise ValueError("num_correct must lie in [0, num_samples] for every problem")
    if n.numel() and k > int(n.min()):
        raise ValueError(f"k={k} is larger than the number of samples n={int(n.min())} of some problem; need k <= n")
    if n.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64)  # [n_max]
    in_product = (i.unsqueeze(0) > (n - c).unsqueeze(1)) & (i.unsqueeze(0) <= n.unsqueeze(1))  # [P, n_max]
    factors = torch.where(in_product, 1.0 - k / i.unsqueeze(0), torch.ones((), dtype=torch.float64))  # [P, n_max]
    estimate = 1.0 - factors.prod(dim=1)  # [P]
    return torch.where(n - c < k, torch.ones((), dtype=torch.float64), estimate)


def majority_answer(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent answer; ties go to the answer seen first; ``None`` (no answer) never votes.

    >>> majority_answer(["7", None, "5", "5", "7"])
    '7'
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == top)


def maj_at_k(answers: Sequence[Hashable | None], reference: Hashable, k: int) -> float:
    """1.0 if the majority of the first ``k`` extracted answers equals ``reference``, else 0.0.

    ``answers`` are normalised final answers of the samples in order (``None`` = none extracted).
    Exactly the first k samples vote (docs/spec.md §9.2); k larger than the sample count is an error.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k > len(answers):
        raise ValueError(f"k={k} is larger than the number of samples ({len(answers)}); need k <= n")
    winner = majority_answer(answers[:k])
    return float(winner is not None and winner == reference)


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(targets - predictions) / Var(targets)`` over the masked entries (PPO's value-fit
    diagnostic: 1 = perfect, 0 = no better than predicting the mean, < 0 = worse).

    predictions, targets: [...] float; mask: [...] bool -> [] float (NaN when targets have no variance)
    """
    if predictions.shape != targets.shape or mask.shape != targets.shape or mask.dtype != torch.bool:
        raise ValueError("predictions, targets and a bool mask must share one shape")
    dtype = torch.promote_types(targets.dtype, torch.float32)
    y = targets[mask].to(dtype)  # [M]
    residual = y - predictions[mask].to(dtype)  # [M]
    if y.numel() < 2:
        return torch.tensor(float("nan"), dtype=dtype)
    variance = y.var(unbiased=False)
    nan = torch.tensor(float("nan"), dtype=dtype, device=y.device)
    return torch.where(variance > 0, 1 - residual.var(unbiased=False) / variance.clamp(min=torch.finfo(dtype).tiny), nan)
