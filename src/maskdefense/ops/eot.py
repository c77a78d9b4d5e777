"""Expectation over Transformation (Athalye et al. 2018): :class:`EOT` averages ``samples`` forward
passes of a randomized model, each with fresh randomness; the output is the log of the mean softmax, so
any gradient attack run against it follows the averaged gradient. (A MAD defense's own ``forward``
already averages ``n_grad`` masked copies; EOT on top multiplies the samples per gradient.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..validation import positive_int

__all__ = ["EOT", "log_mean_softmax"]


def log_mean_softmax(outs: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(softmax(outs), dim))``, computed stably: the output convention of every randomized
    defense (a valid logit vector, never raw probabilities)."""
    return torch.logsumexp(torch.log_softmax(outs, dim=-1), dim=dim) - math.log(outs.shape[dim])


class EOT(nn.Module):
    """Average ``samples`` forward passes of a randomized ``model`` (fresh randomness each).

    reduction : ``"logprob"`` (default) -- ``log(mean_k softmax(model(x)))``, a valid log-probability
        vector (what MAD's own forward returns); ``"logits"`` -- the mean of the logits.
    """

    def __init__(self, model: nn.Module, samples: int, reduction: str = "logprob") -> None:
        super().__init__()
        positive_int(samples, "samples")
        if reduction not in ("logprob", "logits"):
            raise ValueError(f"reduction must be 'logprob' or 'logits', got {reduction!r}")
        self.model = model
        self.samples = samples
        self.reduction = reduction

    def forward(self, x: Tensor) -> Tensor:
        outs = torch.stack([self.model(x) for _ in range(self.samples)])
        if self.reduction == "logits":
            return outs.mean(0)
        return log_mean_softmax(outs)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, reduction={self.reduction!r}"
