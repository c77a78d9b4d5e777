"""Hard votes over copies, defined once: counting the classes the copies vote for, taking the winner, and
testing whether the winner beat the runner-up by more than chance."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binom
from torch import Tensor

__all__ = ["count_votes", "top_class", "top_two", "top_two_pvalue"]


def count_votes(logits: Tensor) -> Tensor:
    """Hard votes ``(N, K)`` (long) from copy logits ``(N, M, K)``: each copy votes for its argmax."""
    preds = logits.argmax(dim=2)
    counts = torch.zeros(logits.shape[0], logits.shape[2], dtype=torch.long, device=logits.device)
    return counts.scatter_add_(1, preds, torch.ones_like(preds))


def top_class(counts: Tensor) -> Tensor:
    """Most-voted class per row of ``counts`` ``(N, K)``; ties go to the **smallest** class index."""
    k = counts.shape[1]
    is_max = counts == counts.max(dim=1, keepdim=True).values
    idx = torch.arange(k, device=counts.device).expand_as(counts)
    return torch.where(is_max, idx, torch.full_like(idx, k)).min(dim=1).values


def top_two(counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The winner of each row of ``counts`` (:func:`top_class`), its votes and the runner-up's votes."""
    leader = top_class(counts)
    lead = counts.gather(1, leader[:, None])[:, 0]
    runner = counts.scatter(1, leader[:, None], -1).max(dim=1).values
    return leader, lead, runner


def top_two_pvalue(n_a: np.ndarray | Tensor, n_b: np.ndarray | Tensor) -> np.ndarray:
    """Two-sided p-value of the test that the leader's ``n_a`` votes among the ``n_a + n_b`` votes of leader and
    runner-up (``n_a >= n_b``) are Binomial(n_a + n_b, 1/2): ``min(1, 2 P(X >= n_a))``, which equals
    ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue`` for a symmetric binomial (the top-2 test of Hung and
    Fithian 2019 that Cohen et al.'s ``predict`` uses); 1 where there are no votes."""
    a = np.asarray(n_a.cpu() if isinstance(n_a, Tensor) else n_a, dtype=np.int64)
    b = np.asarray(n_b.cpu() if isinstance(n_b, Tensor) else n_b, dtype=np.int64)
    return np.where(a + b > 0, np.minimum(1.0, 2.0 * binom.sf(a - 1, a + b, 0.5)), 1.0)
