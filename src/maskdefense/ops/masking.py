"""The grid masking operator ``tau(x, c)`` of MAD (Xu et al., Algorithms 2022, section 3).

Mask convention (defined here, once, for the whole package)
-----------------------------------------------------------
A mask says which pixels are **kept**: ``1 = pixel kept, 0 = pixel removed (filled)``.

* a *pixel mask* is a float tensor of shape ``(N, 1, H, W)`` with values in ``{0, 1}``; the single
  channel is broadcast, so every channel of an image shares the same mask;
* a *cell mask* is a boolean tensor of shape ``(N, H // cell, W // cell)``; ``True`` = the whole
  ``cell x cell`` block is kept, ``False`` = the block is removed. :func:`upsample_mask` turns a cell
  mask into a pixel mask.

Masking is ``masked = x * m + fill * (1 - m)``; the fill is black (``0.0``, the paper's default),
the per-image per-channel mean, uniform noise, a constant, or a tensor. The ``rate`` of a
:class:`GridMask` is the probability that a cell is **removed** (the paper's "mask rate": 3/4 means
about three quarters of the cells are filled with black).

Paper settings: 8x8-pixel cells with rate 3/4 for 32x32 images at training time (4x4 cells at test
time on CIFAR-10), 7x7-pixel cells for 28x28 MNIST.

>>> g = torch.Generator().manual_seed(0)
>>> t = GridMask(cell=8, rate=0.75)            # the training transform
>>> x = torch.rand(4, 3, 32, 32)
>>> xm = t(x, g)                               # same shape, ~3/4 of the 8x8 cells black
>>> cm = grid_mask(4, 32, 8, 0.75, generator=g, exact=True)   # (4, 4, 4) bool, 12 cells False each
>>> xm = apply_mask(x, upsample_mask(cm, 8), fill="mean")
"""

from __future__ import annotations

import itertools
import math
from typing import Union

import torch
from torch import Tensor

from ..seeding import uniform
from ..validation import InputError

__all__ = [
    "MASK_CONVENTION", "KEEP", "REMOVED", "FILLS", "Fill",
    "grid_shape", "cells_removed", "grid_mask", "upsample_mask", "apply_mask", "enumerate_masks",
    "GridMask",
]

MASK_CONVENTION = "1 = pixel kept, 0 = pixel removed (filled); masked = x * m + fill * (1 - m)"
#: Value of a kept pixel / cell in a mask.
KEEP = 1
#: Value of a removed (filled) pixel / cell in a mask.
REMOVED = 0
#: Named fill modes accepted by :func:`apply_mask`.
FILLS = ("black", "mean", "noise")

Fill = Union[str, float, Tensor]


# --------------------------------------------------------------------------------------------------
# argument checks


def _as_size(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    hw = tuple(int(s) for s in size)
    if len(hw) != 2:
        raise ValueError(f"size must be an int or (H, W), got {size!r}")
    return hw[0], hw[1]


def _check_cell(cell: object) -> int:
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise ValueError(f"cell must be a positive int (cell side in pixels), got {cell!r}")
    return cell


def _check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= float(rate) <= 1.0):
        raise ValueError(f"rate (probability that a cell is removed) must be in [0, 1], got {rate!r}")
    return float(rate)


def _check_fill(fill: object) -> Fill:
    if isinstance(fill, str):
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; use one of {FILLS}, a float, or a tensor")
        return fill
    if isinstance(fill, bool) or not isinstance(fill, (int, float, Tensor)):
        raise ValueError(f"fill must be one of {FILLS}, a float, or a tensor, got {type(fill).__name__}")
    if isinstance(fill, Tensor):
        return fill
    return float(fill)


def _fill_config(fill: Fill) -> object:
    """JSON-able form of a fill."""
    return fill.detach().cpu().tolist() if isinstance(fill, Tensor) else fill


def grid_shape(size: tuple[int, int] | int, cell: int) -> tuple[int, int]:
    """Number of cells ``(H // cell, W // cell)``; raises ``ValueError`` if ``cell`` does not divide a side."""
    h, w = _as_size(size)
    cell = _check_cell(cell)
    for name, side in (("height", h), ("width", w)):
        if side < 1 or side % cell:
            raise ValueError(f"cell {cell} does not divide image side {side} (image {name}); "
                             f"choose a cell size that divides {h}x{w}")
    return h // cell, w // cell


def cells_removed(rate: float, num_cells: int) -> int:
    """Cells removed per image in exact mode: ``rate * num_cells`` rounded half up."""
    return int(math.floor(_check_rate(rate) * num_cells + 0.5))


# --------------------------------------------------------------------------------------------------
# masks


def grid_mask(
    n: int,
    size: tuple[int, int] | int,
    cell: int,
    rate: float,
    *,
    generator: torch.Generator | None = None,
    exact: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``n`` random cell-level keep masks, boolean ``(n, H // cell, W // cell)`` (``True`` = kept).

    Parameters
    ----------
    n : number of masks (one per image).
    size : image side ``H`` (square) or ``(H, W)``.
    cell : cell side in pixels; must divide ``H`` and ``W`` (else ``ValueError``).
    rate : probability that a cell is removed, in ``[0, 1]``.
    generator : source of randomness (``None``: torch's global RNG). Masks are drawn on the generator's
        device and moved to ``device``.
    exact : ``False``: each cell is removed independently with probability ``rate`` (Bernoulli, the
        paper's scheme). ``True``: exactly :func:`cells_removed` ``(rate, num_cells)`` cells are removed in
        every mask, chosen uniformly without replacement (argsort of uniform noise).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    gh, gw = grid_shape(size, cell)
    rate = _check_rate(rate)
    cells = gh * gw
    u = uniform((n, cells), generator, device)
    if not exact:
        keep = u >= rate  # P(removed) = P(u < rate) = rate
    else:
        k = cells_removed(rate, cells)
        removed = u.argsort(dim=1)[:, :k]  # a uniformly random k-subset per row
        keep = torch.ones(n, cells, dtype=torch.bool, device=u.device)
        keep.scatter_(1, removed, False)
    return keep.view(n, gh, gw)


def upsample_mask(cell_mask: Tensor, cell: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Cell mask ``(N, gh, gw)`` -> pixel mask ``(N, 1, gh * cell, gw * cell)`` of ``dtype`` (1 = kept)."""
    cell = _check_cell(cell)
    if not isinstance(cell_mask, Tensor) or cell_mask.dim() != 3:
        raise InputError(f"cell mask must be a tensor of shape (N, gh, gw), got "
                         f"{tuple(cell_mask.shape) if isinstance(cell_mask, Tensor) else type(cell_mask).__name__}")
    m = cell_mask.to(dtype)
    return m.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2).unsqueeze(1)


def enumerate_masks(
    size: tuple[int, int] | int,
    cell: int,
    num_removed: int,
    *,
    device: torch.device | str | None = None,
    max_masks: int = 1_000_000,
) -> Tensor:
    """All cell masks with exactly ``num_removed`` cells removed, boolean ``(C(cells, k), gh, gw)``.

    Masks are ordered lexicographically by the (row-major) indices of their removed cells, as
    :func:`itertools.combinations` yields them. ``ValueError`` if there would be more than ``max_masks``.
    """
    gh, gw = grid_shape(size, cell)
    cells = gh * gw
    if isinstance(num_removed, bool) or not isinstance(num_removed, int) or not 0 <= num_removed <= cells:
        raise ValueError(f"num_removed must be an int in [0, {cells}], got {num_removed!r}")
    count = math.comb(cells, num_removed)
    if count > max_masks:
        raise ValueError(f"{count} masks (C({cells}, {num_removed})) exceed max_masks={max_masks}")
    keep = torch.ones(count, cells, dtype=torch.bool, device=device)
    if num_removed and count:
        idx = torch.tensor(list(itertools.combinations(range(cells), num_removed)), dtype=torch.long, device=device)
        keep.scatter_(1, idx, False)
    return keep.view(count, gh, gw)


def _as_pixel_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Pixel mask broadcastable to ``x`` from a pixel mask or a cell mask (cell size inferred)."""
    if not isinstance(mask, Tensor):
        raise InputError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    n, _, h, w = x.shape
    if mask.dim() == 3:  # cell mask (N, gh, gw)
        gh, gw = mask.shape[1:]
        if gh == 0 or gw == 0 or h % gh or w % gw or h // gh != w // gw:
            raise InputError(f"cell mask of shape {tuple(mask.shape)} does not tile a {h}x{w} image "
                             "with square cells")
        mask = upsample_mask(mask, h // gh, dtype=x.dtype)
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (h, w) or mask.shape[0] not in (1, n):
        raise InputError(f"mask must have shape ({n} or 1, 1, {h}, {w}) (pixel mask) or (N, gh, gw) "
                         f"(cell mask), got {tuple(mask.shape)}")
    return mask.to(device=x.device, dtype=x.dtype)


def apply_mask(x: Tensor, mask: Tensor, fill: Fill = "black", *, generator: torch.Generator | None = None) -> Tensor:
    """Return ``x * m + fill * (1 - m)``: removed pixels (``m = 0``) replaced by ``fill``.

    Parameters
    ----------
    x : images ``(N, C, H, W)`` in ``[0, 1]`` (only the structure is checked here: this runs per batch).
    mask : pixel mask ``(N or 1, 1, H, W)`` or cell mask ``(N, gh, gw)``; 1 = kept. The same mask applies
        to every channel.
    fill : ``"black"`` (0.0, the paper's default); ``"mean"`` (per-image, per-channel mean of ``x``);
        ``"noise"`` (uniform ``[0, 1)`` noise from ``generator``, independent per pixel and channel);
        a float; or a tensor broadcastable to ``x``.
    generator : randomness for ``fill="noise"`` (``None``: global RNG).

    The result is differentiable w.r.t. ``x`` (gradient ``m`` on kept pixels, plus the mean's
    contribution with ``fill="mean"``).
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise InputError("images must be a floating tensor of shape (N, C, H, W), got "
                         + (f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__))
    m = _as_pixel_mask(mask, x)
    fill = _check_fill(fill)
    if isinstance(fill, str):
        if fill == "black":
            return x * m
        if fill == "mean":
            value: Tensor | float = x.mean(dim=(2, 3), keepdim=True)
        else:  # "noise"
            value = uniform(tuple(x.shape), generator, x.device).to(x.dtype)
    else:
        value = fill.to(device=x.device, dtype=x.dtype) if isinstance(fill, Tensor) else fill
    return x * m + value * (1 - m)


# --------------------------------------------------------------------------------------------------
# the training transform


class GridMask:
    """MAD's training transform: random grid masking of a batch, ``transform(images, generator)``.

    Each image gets its own mask; a cell is removed with probability ``rate`` (or, with
    ``exact=True``, exactly :func:`cells_removed` cells per image). Paper defaults: ``cell=8``,
    ``rate=0.75`` for 32x32 images; ``cell=7`` for 28x28 MNIST.
    """

    def __init__(self, cell: int, rate: float, fill: Fill = "black", exact: bool = False) -> None:
        self.cell = _check_cell(cell)
        self.rate = _check_rate(rate)
        self.fill = _check_fill(fill)
        self.exact = bool(exact)

    def sample(self, n: int, size: tuple[int, int] | int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """``n`` cell masks for images of ``size`` (boolean ``(n, gh, gw)``, True = kept)."""
        return grid_mask(n, size, self.cell, self.rate, generator=generator, exact=self.exact, device=device)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise InputError("GridMask expects images of shape (B, C, H, W), got "
                             + (str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__))
        cm = self.sample(x.shape[0], (x.shape[2], x.shape[3]), generator, x.device)
        return apply_mask(x, upsample_mask(cm, self.cell, dtype=x.dtype), self.fill, generator=generator)

    def config(self) -> dict[str, object]:
        return {"transform": "grid_mask", "cell": self.cell, "rate": self.rate,
                "fill": _fill_config(self.fill), "exact": self.exact}

    def __repr__(self) -> str:
        return f"GridMask(cell={self.cell}, rate={self.rate}, fill={self.fill!r}, exact={self.exact})"
