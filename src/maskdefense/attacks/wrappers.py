"""Model wrappers for adaptive attacks (Athalye et al. 2018; Tramer et al. 2020).

* :class:`EOT` -- Expectation over Transformation: the output is the log of the mean softmax over
  ``samples`` forward calls of a randomized model, each with fresh randomness, so any gradient attack
  run against it follows the averaged gradient. (A MAD defense's own ``forward`` already averages
  ``n_grad`` masked copies; EOT on top multiplies the samples per gradient.)
* :class:`BPDA` -- Backward Pass Differentiable Approximation: forward applies a (possibly
  non-differentiable) preprocessing ``f``; backward uses the identity, or the gradient of a given
  differentiable approximation ``g``.
* :class:`DiverseInputModel` -- applies Xie et al.'s input diversity before the model, so any library
  attack becomes its DI variant.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .momentum import diverse_input

__all__ = ["EOT", "BPDA", "bpda", "DiverseInputModel"]


class EOT(nn.Module):
    """Average ``samples`` forward passes of a randomized ``model`` (fresh randomness each).

    reduction : ``"logprob"`` (default) -- ``log(mean_k softmax(model(x)))``, a valid log-probability
        vector (what MAD's own forward returns); ``"logits"`` -- the mean of the logits.
    """

    def __init__(self, model: nn.Module, samples: int, reduction: str = "logprob") -> None:
        super().__init__()
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}")
        if reduction not in ("logprob", "logits"):
            raise ValueError(f"reduction must be 'logprob' or 'logits', got {reduction!r}")
        self.model = model
        self.samples = samples
        self.reduction = reduction

    def forward(self, x: Tensor) -> Tensor:
        outs = torch.stack([self.model(x) for _ in range(self.samples)])
        if self.reduction == "logits":
            return outs.mean(0)
        return torch.logsumexp(torch.log_softmax(outs, dim=-1), dim=0) - math.log(self.samples)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, reduction={self.reduction!r}"


class _IdentityBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, fx: Tensor) -> Tensor:  # type: ignore[override]
        return fx.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def bpda(f: Callable[[Tensor], Tensor], x: Tensor, approx: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``f(x)`` in the forward pass; in the backward pass the identity (``approx=None``, requires
    ``f(x)`` to have the shape of ``x``) or the gradient of ``approx`` at ``x``."""
    with torch.no_grad():
        fx = f(x.detach())
    if approx is None:
        if fx.shape != x.shape:
            raise ValueError(f"identity BPDA needs f(x) shaped like x, got {tuple(fx.shape)} vs {tuple(x.shape)}")
        return _IdentityBackward.apply(x, fx)
    gx = approx(x)
    if gx.shape != fx.shape:
        raise ValueError(f"BPDA approximation output {tuple(gx.shape)} differs from f(x) {tuple(fx.shape)}")
    return gx + (fx - gx).detach()


class BPDA(nn.Module):
    """Module form of :func:`bpda`: ``BPDA(f)`` or ``BPDA(f, approx)``; compose it before a classifier,
    e.g. ``nn.Sequential(BPDA(median_filter), classifier)``."""

    def __init__(self, f: Callable[[Tensor], Tensor], approx: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.f = f
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        return bpda(self.f, x, self.approx)

    def extra_repr(self) -> str:
        return f"approx={'identity' if self.approx is None else getattr(self.approx, '__name__', 'given')}"


class DiverseInputModel(nn.Module):
    """``model(DI(x))`` with Xie et al.'s input diversity (probability ``p``) on every call."""

    def __init__(self, model: nn.Module, p: float = 0.5, resize_rate: float = 0.9) -> None:
        super().__init__()
        self.model = model
        self.p = p
        self.resize_rate = resize_rate

    def forward(self, x: Tensor) -> Tensor:
        return self.model(diverse_input(x, self.p, self.resize_rate))
