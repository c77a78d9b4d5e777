"""Detector thresholds, defined once: the rejection rule is ``score > threshold`` (higher = more suspicious),
and a threshold is set on clean validation scores at a stated false-positive rate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["threshold_at_fpr"]


def threshold_at_fpr(scores: Tensor, fpr: float) -> float:
    """The threshold whose rejection rule ``score > threshold`` rejects at most a fraction ``fpr`` of
    ``scores`` (clean validation scores): the ``floor(fpr * n) + 1``-th largest score (so exactly
    ``floor(fpr * n)`` scores lie above it when they are distinct)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if s.numel() == 0 or not bool(torch.isfinite(s).all()):
        raise ValueError("threshold_at_fpr needs at least one finite score")
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr!r}")
    k = int(math.floor(fpr * s.numel()))
    return float(s.sort(descending=True).values[k])
