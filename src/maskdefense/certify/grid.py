"""A certificate for MAD's grid masks (Xu et al., Algorithms 2022), made deterministic: the majority vote
over *every* mask that removes exactly ``r`` of the ``G`` cells -- what none of the masking papers proves.

Setup. The image is cut into ``G = (H / c) (W / c)`` cells of ``c x c`` pixels; the mask set is all
``C(G, r)`` masks removing exactly ``r = round(rate * G)`` cells (:func:`~maskdefense.ops.masking.enumerate_masks`),
removed pixels filled with a constant (black, as MAD). Copy ``m`` votes for the base classifier's argmax; the
decision is the most-voted class, ties to the smaller index (MAD's vote, :func:`~maskdefense.ops.vote.top_class`).

Derivation. A ``p x p`` patch at location ``l`` touches a set ``T(l)`` of ``t = |T(l)|`` cells. A mask that
removes every cell of ``T(l)`` hides the whole patch: its copy is the clean image's copy, its vote fixed.
There are ``U_t = C(G - t, r - t)`` such masks (the other ``r - t`` removed cells chosen among the other
``G - t``); every other mask, ``A_t = C(G, r) - U_t`` of them, shows part of the patch and may vote for
anything. With ``u_k(l)`` the votes for ``k`` among the unaffected masks (read off the clean image's
votes), a patch at ``l`` leaves the decision ``y`` with at least ``u_y(l)`` votes and gives any ``k`` at most
``u_k(l) + A_t`` -- both at once when every affected vote goes to ``k``, which is the adversary's best
play against ``k``. So, ties going to the smaller class, the decision survives every patch at ``l`` iff
for every ``k != y``

    u_y(l) > u_k(l) + A_t,   or   u_y(l) = u_k(l) + A_t  and  y < k,

and a patch size is certified iff this holds at every location (:func:`~maskdefense.certify.base.location_margins`).
This is exact for an adversary who controls the affected masks' votes, and a test checks it against brute
force over every location and every vote the affected masks could cast.

When can it certify anything? Since ``u_y(l) <= U_t`` and ``u_k(l) >= 0``, a certificate needs
``U_t >= A_t`` (``>`` unless ``y = 0``), i.e. the fraction of masks hiding a ``t``-cell set,

    U_t / C(G, r) = C(G - t, r - t) / C(G, r) = prod_{i < t} (r - i) / (G - i),

must reach 1/2 at the largest ``t`` any location gives, ``t_max = min(ceil((p - 1) / c) + 1, H / c) *
min(ceil((p - 1) / c) + 1, W / c)`` (a patch of 2 or more pixels can straddle a corner of 4 cells: ``t_max
>= 4`` for every ``p >= 2``; ``t = 1`` only for ``p = 1``). Roughly ``rate^t > 1/2``: at MAD's rate 3/4 the
fraction at ``t = 4`` is 0.27 (``G = 16``) to 0.31 (``G = 64``), so **MAD's setting certifies no patch of 2 or
more pixels**, at any cell size; with 4 touched cells it takes ``r >= 14`` of 16 cells (rate 7/8, fraction
0.55) or ``r >= 55`` of 64 (0.54), i.e. the classifier must decide from 1/8 or less of the image. And the
mask set must be enumerable: ``C(16, 12) = 1820`` masks (8x8 cells on 32x32, 7x7 on 28x28) is, ``C(64, 48)``
(MAD's 4x4 test cells on CIFAR-10) is not. :func:`feasibility` tabulates this.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..ops.ablation import patch_locations
from ..ops.masking import _check_cell, _check_rate, cells_removed, enumerate_masks, grid_shape, upsample_mask
from ..ops.vote import count_votes, top_class
from .base import Certificate, Certifier, affected_copies, check_patch_sizes, location_margins, weakest

__all__ = ["GridCertifier", "unaffected_fraction", "max_touched", "feasibility", "largest_certifiable"]


def unaffected_fraction(cells: int, removed: int, touched: int) -> float:
    """``C(G - t, r - t) / C(G, r)``: the fraction of the ``r``-of-``G`` masks that remove all of ``t``
    given cells (0 when ``t > r``)."""
    if touched > removed:
        return 0.0
    return math.comb(cells - touched, removed - touched) / math.comb(cells, removed)


def max_touched(patch: int, cell: int, grid: tuple[int, int]) -> int:
    """The most cells a ``patch x patch`` patch touches at any location of a grid of ``grid`` cells."""
    span = math.ceil((patch - 1) / cell) + 1
    return min(span, grid[0]) * min(span, grid[1])


def feasibility(size: int, cell: int, rate: float, patch: int) -> dict[str, object]:
    """Whether the grid certificate can certify ``patch x patch`` patches at all for ``size x size`` images
    with ``cell``-pixel cells and ``rate``: the masks, ``t_max``, the unaffected fraction at ``t_max`` and
    ``possible`` (the fraction reaches 1/2)."""
    gh, gw = grid_shape(size, cell)
    g = gh * gw
    r = cells_removed(rate, g)
    t = max_touched(patch, cell, (gh, gw))
    frac = unaffected_fraction(g, r, t)
    return {"cells": g, "removed": r, "masks": math.comb(g, r), "t_max": t, "unaffected_fraction": frac,
            "possible": frac >= 0.5}


def largest_certifiable(size: int, cell: int, rate: float) -> int:
    """The largest patch side :func:`feasibility` allows for ``size x size`` images, ``cell``-pixel cells and
    ``rate`` (0: not even one pixel). ``t_max`` grows with the side, so every smaller side is allowed too.
    With every cell removed (``round(rate * G) = G``) the vote is a constant and "certifies" every side."""
    return max((p for p in range(1, size + 1) if feasibility(size, cell, rate, p)["possible"]), default=0)


class GridCertifier(Certifier):
    """The majority vote over every grid mask removing exactly ``round(rate * G)`` cells, and its
    certificate (see the module docstring).

    cell, rate : the cell side in pixels (dividing the image sides) and the fraction of cells removed;
    n_grad : masks the differentiable surrogate averages (spread evenly over the set); max_masks : refuse
    larger mask sets.
    """

    def __init__(self, base: nn.Module, *, cell: int, rate: float, fill: object = "black", n_grad: int | None = 64,
                 max_masks: int = 100_000, chunk_size: int = 2048) -> None:
        super().__init__(base, fill=fill, n_grad=n_grad, chunk_size=chunk_size)
        self.cell, self.rate = _check_cell(cell), _check_rate(rate)
        self.max_masks = max_masks

    def copy_masks(self, h: int, w: int) -> Tensor:
        """Every mask of the set as a pixel keep mask ``(C(G, r), 1, H, W)``."""
        gh, gw = grid_shape((h, w), self.cell)
        r = cells_removed(self.rate, gh * gw)
        try:
            cm = enumerate_masks((h, w), self.cell, r, max_masks=self.max_masks)
        except ValueError as e:
            raise ValueError(f"grid certificate: {e}; use larger cells or a rate nearer 0 or 1") from None
        return upsample_mask(cm, self.cell)

    def passes(self, h: int, w: int) -> int:
        gh, gw = grid_shape((h, w), self.cell)
        return math.comb(gh * gw, cells_removed(self.rate, gh * gw))

    @torch.no_grad()
    def copy_votes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, M, K)`` one-hot votes of every mask, and the keep masks."""
        x = self._check(x)
        keep = self.copy_masks(x.shape[2], x.shape[3])
        logits = self.masked_logits(x, keep)
        return torch.nn.functional.one_hot(logits.argmax(dim=2), logits.shape[2]), keep

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        x = self._check(x)
        return top_class(count_votes(self.masked_logits(x, self.copy_masks(x.shape[2], x.shape[3]))))

    @torch.no_grad()
    def margins(self, x: Tensor, patch: int) -> tuple[Tensor, Tensor]:
        """The decision ``(N,)`` and its margin at every location of a ``patch x patch`` patch ``(N, L)``."""
        votes, keep = self.copy_votes(x)
        decision = top_class(votes.sum(dim=1))
        return decision, location_margins(votes, affected_copies(keep, patch), decision)

    @torch.no_grad()
    def certify(self, x: Tensor, patch_sizes: int | Sequence[int]) -> Certificate:
        sizes = check_patch_sizes(patch_sizes, x.shape[2], x.shape[3])
        votes, keep = self.copy_votes(x)
        decision = top_class(votes.sum(dim=1))
        cols = [location_margins(votes, affected_copies(keep, p), decision).min(dim=1).values >= 0 for p in sizes]
        passes = torch.full_like(decision, keep.shape[0])
        return Certificate(decision, torch.stack(cols, dim=1), sizes, passes)

    @torch.no_grad()
    def weak_locations(self, x: Tensor, patch: int, count: int) -> Tensor:
        _, m = self.margins(x, patch)
        return weakest(m, patch_locations((x.shape[2], x.shape[3]), patch), count)

    def config(self) -> dict[str, object]:
        return {"certifier": "grid", "cell": self.cell, "rate": self.rate, "n_grad": self.n_grad,
                "fill": self.fill.tolist() if isinstance(self.fill, Tensor) else self.fill}
