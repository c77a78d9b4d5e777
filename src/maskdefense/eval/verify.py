"""The harness's own verification of every adversarial example (it never trusts the attack).

An example is *valid* when it is finite, every pixel lies in ``[0, 1]``, and its perturbation norm is
at most ``eps`` up to floating-point tolerance::

    ||x_adv - x||_p <= eps * (1 + rtol) + atol * d ** (1 / p)      (d = C*H*W; Linf: atol)

with ``rtol = 1e-5`` and ``atol = 1e-6`` per pixel (float32 images near 1.0 are spaced 1.2e-7 apart).
Norms are computed in float64. Invalid examples count as *not adversarial* (the attack failed there)
and raise a flag in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["perturbation_norms", "norm_tolerance", "verify_perturbation", "Verification", "RTOL", "ATOL"]

RTOL = 1e-5
ATOL = 1e-6

_P = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def perturbation_norms(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """Per-example L0 (number of changed elements), L1, L2 and Linf norms of ``x_adv - x`` (float64)."""
    d = (x_adv.detach().double() - x.detach().double()).flatten(1)
    return {
        "l0": (d != 0).sum(1).double(),
        "l1": d.abs().sum(1),
        "l2": d.norm(p=2, dim=1),
        "linf": d.abs().amax(1) if d.shape[1] else torch.zeros(d.shape[0], dtype=torch.float64),
    }


def norm_tolerance(eps: float, norm: str, dim: int, rtol: float = RTOL, atol: float = ATOL) -> float:
    """The largest accepted norm for budget ``eps`` in ``norm`` for inputs of ``dim`` elements."""
    if norm not in _P:
        raise ValueError(f"norm must be one of {sorted(_P)}, got {norm!r}")
    if math.isinf(eps):
        return math.inf
    p = _P[norm]
    slack = atol if math.isinf(p) else atol * dim ** (1.0 / p)
    return eps * (1.0 + rtol) + slack


@dataclass
class Verification:
    """Result of :func:`verify_perturbation` (all per-example tensors of length N).

    valid : finite, in range and within budget.
    eps_ok : perturbation norm within ``eps`` (+ tolerance); False for non-finite examples.
    range_ok : every value finite and in ``[0, 1]``.
    norms : ``{"l0", "l1", "l2", "linf"}`` float64 norms of the raw perturbation.
    """

    valid: Tensor
    eps_ok: Tensor
    range_ok: Tensor
    norms: dict[str, Tensor]
    limit: float


def verify_perturbation(x: Tensor, x_adv: Tensor, norm: str, eps: float, *,
                        rtol: float = RTOL, atol: float = ATOL) -> Verification:
    """Check every adversarial example against the budget ``eps`` in ``norm`` and the range [0, 1]."""
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        raise ValueError(f"adversarial batch has shape {tuple(getattr(x_adv, 'shape', ()))}, expected {tuple(x.shape)}")
    flat = x_adv.detach().flatten(1)
    finite = torch.isfinite(flat).all(1)
    range_ok = finite & (flat >= 0).all(1) & (flat <= 1).all(1)
    norms = perturbation_norms(x, x_adv)
    limit = norm_tolerance(eps, norm, int(flat.shape[1]), rtol, atol)
    eps_ok = finite & (norms[norm] <= limit)
    return Verification(range_ok & eps_ok, eps_ok, range_ok, norms, limit)
