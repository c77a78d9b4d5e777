"""Structured ablations and patch geometry for patch certification, in the mask convention of
:mod:`maskdefense.ops.masking` (``1 = pixel kept, 0 = removed``; pixel masks ``(M, 1, H, W)``).

* :func:`band_masks`, :func:`block_masks`: every ablation of derandomized smoothing (Levine and Feizi,
  NeurIPS 2020, Sections 3-4): a band of ``band`` columns (or rows), or a ``block x block`` square, is
  *kept* and everything else removed, at every position, wrapping around the image edge as the reference
  code does (alevine0/patchSmoothing, ``utils_band.py`` / ``utils_block.py``): ``W`` column ablations,
  ``H * W`` block ablations.
* :func:`covering_masks`: PatchCleanser's R-covering mask set (Xiang et al., USENIX Security 2022, Section
  4.1; the reference code's ``gen_mask_set``): for an ``n``-pixel side, patch ``p`` and ``k`` masks per axis the
  stride is ``s = ceil((n - p + 1) / k)``, the mask side ``m = min(p + s - 1, n)``, the positions
  ``0, s, 2s, ...`` up to ``n - m`` plus ``n - m`` itself when the stride does not land on it; a mask
  *removes* its ``m x m`` square, and every ``p x p`` patch lies inside at least one mask.
* :func:`patch_locations`, :func:`patch_mask`: the ``(H - p + 1) * (W - p + 1)`` positions of a ``p x p``
  patch and its pixel mask (1 = inside the patch), the threat model of all three certifiers.
* Training transforms ``transform(images, generator)`` (one random ablation per image, as the base
  classifiers of the certifiers are trained): :class:`BandAblation`, :class:`BlockAblation`,
  :class:`Cutout` (PatchCleanser's masked training, after DeVries and Taylor's Cutout: ``holes`` squares of
  side ``length`` centred at uniform random pixels, clipped at the border), and :func:`make_transform`
  building any of them, or MAD's :class:`~maskdefense.ops.masking.GridMask`, from a JSON description.

The fill of removed pixels is a constant here (black by default): a certificate needs the masked copy
to be a function of the kept pixels only, which an input-dependent fill (the image mean, noise) breaks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..seeding import uniform
from ..validation import InputError
from .masking import GridMask, _as_size

__all__ = [
    "band_masks", "block_masks", "covering_masks", "CoveringSet", "patch_locations", "patch_mask",
    "check_constant_fill", "BandAblation", "BlockAblation", "Cutout", "make_transform",
]


def _side(v: object, name: str, limit: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (limit is not None and v > limit):
        bound = f" and <= {limit}" if limit is not None else ""
        raise ValueError(f"{name} must be an int >= 1{bound}, got {v!r}")
    return v


def check_constant_fill(fill: object) -> float | Tensor:
    """A fill that does not depend on the image: ``"black"`` (0.0), a float, or a per-channel tensor.
    ``"mean"`` and ``"noise"`` are refused: a patch would change the fill of every masked copy."""
    if isinstance(fill, str):
        if fill == "black":
            return 0.0
        raise ValueError(f"fill {fill!r} depends on the image (a patch would change every masked copy); a "
                         "certifier needs a constant fill: 'black', a number or a per-channel tensor")
    if isinstance(fill, Tensor):
        return fill.detach().float()
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be 'black', a number in [0, 1] or a tensor, got {fill!r}")
    return float(fill)


def _wrapped(n: int, start: Tensor, width: int) -> Tensor:
    """``(len(start), n)`` bool: index ``i`` lies in ``[start, start + width)`` modulo ``n``."""
    return ((torch.arange(n, device=start.device)[None, :] - start[:, None]) % n) < width


def band_masks(size: tuple[int, int] | int, band: int, mode: str = "column") -> Tensor:
    """Every band ablation: ``(W, 1, H, W)`` (columns; ``(H, 1, H, W)`` for rows), mask ``i`` keeping the
    ``band`` columns (rows) ``i, i + 1, ...`` modulo the side."""
    h, w = _as_size(size)
    if mode not in ("column", "row"):
        raise ValueError(f"mode must be 'column' or 'row', got {mode!r}")
    n = w if mode == "column" else h
    band = _side(band, "band", n)
    keep = _wrapped(n, torch.arange(n), band).float()  # (positions, n)
    if mode == "column":
        return keep[:, None, None, :].expand(n, 1, h, w).contiguous()
    return keep[:, None, :, None].expand(n, 1, h, w).contiguous()


def block_masks(size: tuple[int, int] | int, block: int) -> Tensor:
    """Every block ablation: ``(H * W, 1, H, W)``, mask ``r * W + c`` keeping the ``block x block`` square
    whose top-left pixel is ``(r, c)``, wrapping around both edges."""
    h, w = _as_size(size)
    block = _side(block, "block", min(h, w))
    rows = _wrapped(h, torch.arange(h), block)  # (h, h)
    cols = _wrapped(w, torch.arange(w), block)  # (w, w)
    keep = rows[:, None, :, None] & cols[None, :, None, :]  # (h, w, H, W)
    return keep.reshape(h * w, 1, h, w).float()


class CoveringSet:
    """PatchCleanser's mask set for one image size and patch size (see the module docstring): ``masks``
    ``(M, 1, H, W)`` (0 inside each mask's square), ``size`` the mask side and ``stride`` per axis,
    ``origins`` the top-left pixel of every mask (row-major over the two axes' positions)."""

    def __init__(self, masks: Tensor, size: tuple[int, int], stride: tuple[int, int],
                 origins: list[tuple[int, int]]) -> None:
        self.masks, self.size, self.stride, self.origins = masks, size, stride, origins

    def covers(self, patch: int, image: tuple[int, int]) -> Tensor:
        """``(L, M)`` bool: mask ``j`` contains the ``patch x patch`` patch at location ``l``
        (:func:`patch_locations` order)."""
        locs = patch_locations(image, patch)
        o = torch.tensor(self.origins, dtype=torch.long)  # (M, 2)
        r, c = locs[:, 0:1], locs[:, 1:2]
        return ((o[None, :, 0] <= r) & (r + patch <= o[None, :, 0] + self.size[0])
                & (o[None, :, 1] <= c) & (c + patch <= o[None, :, 1] + self.size[1]))


def _axis_positions(n: int, m: int, s: int) -> list[int]:
    pos = list(range(0, n - m + 1, s))
    if (n - m) % s:
        pos.append(n - m)
    return pos


def covering_masks(size: tuple[int, int] | int, patch: int, k: int | None = None,
                   stride: int | None = None) -> CoveringSet:
    """PatchCleanser's R-covering mask set for ``patch x patch`` patches: ``k`` masks per axis (the stride
    follows from it) or an explicit ``stride`` (exactly one of the two)."""
    h, w = _as_size(size)
    patch = _side(patch, "patch", min(h, w))
    if (k is None) == (stride is None):
        raise ValueError("give exactly one of k (masks per axis) and stride")
    if k is not None:
        k = _side(k, "k")
        st = (math.ceil((h - patch + 1) / k), math.ceil((w - patch + 1) / k))
    else:
        st = (_side(stride, "stride"),) * 2
    msize = (min(patch + st[0] - 1, h), min(patch + st[1] - 1, w))
    rows, cols = _axis_positions(h, msize[0], st[0]), _axis_positions(w, msize[1], st[1])
    origins = [(r, c) for r in rows for c in cols]
    masks = torch.ones(len(origins), 1, h, w)
    for i, (r, c) in enumerate(origins):
        masks[i, :, r:r + msize[0], c:c + msize[1]] = 0.0
    return CoveringSet(masks, msize, st, origins)


def patch_locations(size: tuple[int, int] | int, patch: int) -> Tensor:
    """``(L, 2)`` long: the top-left pixel ``(row, col)`` of every ``patch x patch`` patch inside the image,
    row-major; ``L = (H - patch + 1) * (W - patch + 1)``."""
    h, w = _as_size(size)
    patch = _side(patch, "patch", min(h, w))
    r, c = torch.meshgrid(torch.arange(h - patch + 1), torch.arange(w - patch + 1), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1)


def patch_mask(size: tuple[int, int] | int, patch: int, locations: Tensor) -> Tensor:
    """``(L, 1, H, W)`` float: 1 inside the patch at each of ``locations`` ``(L, 2)``, 0 elsewhere."""
    h, w = _as_size(size)
    loc = locations.to(torch.long).view(-1, 2)
    rows = (torch.arange(h)[None, :] >= loc[:, :1]) & (torch.arange(h)[None, :] < loc[:, :1] + patch)
    cols = (torch.arange(w)[None, :] >= loc[:, 1:]) & (torch.arange(w)[None, :] < loc[:, 1:] + patch)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1).float()


# --------------------------------------------------------------------------------------------------
# training transforms


def _fill_value(fill: float | Tensor, x: Tensor) -> float | Tensor:
    return fill.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1) if isinstance(fill, Tensor) else fill


def _check_batch(x: object, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise InputError(f"{what} expects images of shape (B, C, H, W), got "
                         + (str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__))
    return x


def _positions(n: int, side: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` uniform integers in ``[0, side)`` from ``generator``."""
    return (uniform((n,), generator, device) * side).long().clamp_max(side - 1)


class BandAblation:
    """Derandomized smoothing's training input: one random band of ``band`` columns (rows) kept per
    image, the rest filled (the reference trains on one random ablation per image)."""

    def __init__(self, band: int, mode: str = "column", fill: object = "black") -> None:
        if mode not in ("column", "row"):
            raise ValueError(f"mode must be 'column' or 'row', got {mode!r}")
        self.band, self.mode, self.fill = _side(band, "band"), mode, check_constant_fill(fill)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_batch(x, "BandAblation")
        n, _, h, w = x.shape
        side = w if self.mode == "column" else h
        keep = _wrapped(side, _positions(n, side, generator, x.device), min(self.band, side)).to(x.dtype)
        m = keep[:, None, None, :] if self.mode == "column" else keep[:, None, :, None]
        return x * m + _fill_value(self.fill, x) * (1 - m)

    def config(self) -> dict[str, Any]:
        return {"transform": "band_ablation", "band": self.band, "mode": self.mode, "fill": _cfg(self.fill)}


class BlockAblation:
    """Derandomized smoothing's block training input: one random ``block x block`` square kept per image
    (wrapping around the edges)."""

    def __init__(self, block: int, fill: object = "black") -> None:
        self.block, self.fill = _side(block, "block"), check_constant_fill(fill)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_batch(x, "BlockAblation")
        n, _, h, w = x.shape
        r, c = _positions(n, h, generator, x.device), _positions(n, w, generator, x.device)
        keep = _wrapped(h, r, min(self.block, h))[:, :, None] & _wrapped(w, c, min(self.block, w))[:, None, :]
        m = keep[:, None].to(x.dtype)
        return x * m + _fill_value(self.fill, x) * (1 - m)

    def config(self) -> dict[str, Any]:
        return {"transform": "block_ablation", "block": self.block, "fill": _cfg(self.fill)}


class Cutout:
    """PatchCleanser's masked training (its ``utils/cutout.py``, after DeVries and Taylor): ``holes``
    squares removed per image, each centred at a uniform random pixel ``(y, x)`` and spanning
    ``[y - length // 2, y + length // 2)`` (same in x), clipped at the border."""

    def __init__(self, length: int, holes: int = 2, fill: object = "black") -> None:
        self.length, self.holes, self.fill = _side(length, "length"), _side(holes, "holes"), check_constant_fill(fill)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_batch(x, "Cutout")
        n, _, h, w = x.shape
        half = self.length // 2
        keep = torch.ones(n, h, w, dtype=torch.bool, device=x.device)
        ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for _ in range(self.holes):
            y, c = _positions(n, h, generator, x.device), _positions(n, w, generator, x.device)
            in_r = (ar_h[None, :] >= y[:, None] - half) & (ar_h[None, :] < y[:, None] + half)
            in_c = (ar_w[None, :] >= c[:, None] - half) & (ar_w[None, :] < c[:, None] + half)
            keep &= ~(in_r[:, :, None] & in_c[:, None, :])
        m = keep[:, None].to(x.dtype)
        return x * m + _fill_value(self.fill, x) * (1 - m)

    def config(self) -> dict[str, Any]:
        return {"transform": "cutout", "length": self.length, "holes": self.holes, "fill": _cfg(self.fill)}


def _cfg(fill: float | Tensor) -> object:
    return fill.tolist() if isinstance(fill, Tensor) else fill


def make_transform(spec: dict[str, Any]) -> Any:
    """A training transform from its description (the ``config()`` of one, ``fill`` optional):
    ``{"transform": "band_ablation", "band": 4, "mode": "column"}``, ``"block_ablation"`` (``block``),
    ``"cutout"`` (``length``, ``holes``) or ``"grid_mask"`` (``cell``, ``rate``, ``exact``)."""
    options = dict(spec)
    kind = options.pop("transform", None)
    makers = {"band_ablation": BandAblation, "block_ablation": BlockAblation, "cutout": Cutout, "grid_mask": GridMask}
    if kind not in makers:
        raise ValueError(f"unknown training transform {kind!r}; use one of {sorted(makers)}")
    return makers[kind](**options)
