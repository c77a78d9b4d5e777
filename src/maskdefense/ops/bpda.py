"""Backward Pass Differentiable Approximation (Athalye et al. 2018): forward applies a (possibly
non-differentiable) preprocessing ``f``; backward uses the identity, or the gradient of a given
differentiable approximation ``g``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["BPDA", "bpda"]


class _IdentityBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, fx: Tensor) -> Tensor:  # type: ignore[override]
        return fx.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def bpda(f: Callable[[Tensor], Tensor], x: Tensor, approx: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``f(x)`` in the forward pass (its value exactly); in the backward pass the identity (``approx=None``,
    requires ``f(x)`` to have the shape of ``x``) or the gradient of ``approx`` at ``x``."""
    with torch.no_grad():
        fx = f(x.detach())
    if approx is None:
        if fx.shape != x.shape:
            raise ValueError(f"identity BPDA needs f(x) shaped like x, got {tuple(fx.shape)} vs {tuple(x.shape)}")
        return _IdentityBackward.apply(x, fx)
    gx = approx(x)
    if gx.shape != fx.shape:
        raise ValueError(f"BPDA approximation output {tuple(gx.shape)} differs from f(x) {tuple(fx.shape)}")
    return fx + (gx - gx.detach())  # exactly f(x) (gx - gx is 0), the gradient of approx


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
