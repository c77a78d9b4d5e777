"""Hard votes over copies, defined once: counting the classes the copies vote for and taking the winner."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["count_votes", "top_class"]


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
