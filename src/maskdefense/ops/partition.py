"""REMIX's random pixel partitions and the recombination of inpaintings (Chen, Chen, Yu: REMIX poster,
section III, Equation 2).

The pixel positions of an image are partitioned uniformly at random into ``n`` sets ``P_1 .. P_n`` whose
sizes differ by at most one (a random permutation of the positions cut into ``n`` consecutive runs). Mask
``m^i`` is ``0`` on ``P_i`` and ``1`` elsewhere -- the package's mask convention
(:data:`maskdefense.ops.masking.MASK_CONVENTION`: 1 = kept); one partition is shared by all channels of a
pixel. Every pixel is removed in exactly one of the ``n`` masked copies ``m^i * x``, and the recombination
``x_hat = sum_i x_hat^i * (1 - m^i)`` takes each pixel from the inpainting in which it was removed.

>>> g = torch.Generator().manual_seed(0)
>>> m = partition_masks(4, 3, (32, 32), generator=g)   # (4 images, 3 masks, 1, 32, 32), 1 = kept
>>> copies = mask_copies(x, m)                         # (4, 3, C, 32, 32): m^i * x
>>> x_hat = recombine(inpainter(copies.flatten(0, 1)).view_as(copies), m)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..seeding import uniform
from ..validation import InputError, positive_int

__all__ = ["partition_masks", "mask_copies", "recombine", "PartitionMask"]


def partition_masks(batch: int, n: int, size: tuple[int, int] | int, *, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """For each of ``batch`` images, a random partition of its ``H x W`` pixel positions into ``n`` sets
    (sizes within one of each other), as keep masks ``(batch, n, 1, H, W)``: mask ``i`` is 0 on set ``i``.

    The partition is an argsort of uniform noise drawn from ``generator`` (a uniformly random permutation)
    whose positions ``j`` go to set ``j mod n``; set sizes are ``ceil`` or ``floor`` of ``H W / n``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative int, got {batch!r}")
    n = positive_int(n, "n")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1 or n > h * w:
        raise ValueError(f"cannot partition {h}x{w} pixels into {n} non-empty sets")
    order = uniform((batch, h * w), generator, device).argsort(dim=1)  # position order[b, j] is the j-th drawn
    which = torch.empty_like(order)
    which.scatter_(1, order, (torch.arange(h * w, device=order.device) % n).expand(batch, -1))
    sets = torch.arange(n, device=order.device).view(1, n, 1)
    return (which.unsqueeze(1) != sets).to(dtype).view(batch, n, 1, h, w)


def _check_pair(x: Tensor, masks: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() not in (4, 5) or not x.is_floating_point():
        raise InputError(f"{what} must be a floating tensor (N, C, H, W) or (N, n, C, H, W)")
    if not isinstance(masks, Tensor) or masks.dim() != 5 or masks.shape[2] != 1:
        raise InputError(f"partition masks must have shape (N, n, 1, H, W), got "
                         f"{tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__}")
    if masks.shape[0] != x.shape[0] or masks.shape[-2:] != x.shape[-2:]:
        raise InputError(f"partition masks {tuple(masks.shape)} do not fit images {tuple(x.shape)}")


def mask_copies(x: Tensor, masks: Tensor) -> Tensor:
    """The ``n`` masked copies ``m^i * x`` (removed pixels black), ``(N, n, C, H, W)``; differentiable."""
    _check_pair(x, masks, "images")
    if x.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    return x.unsqueeze(1) * masks.to(x.dtype)


def recombine(inpainted: Tensor, masks: Tensor) -> Tensor:
    """Equation 2 of the poster: ``x_hat = sum_i x_hat^i * (1 - m^i)`` for inpaintings ``(N, n, C, H, W)``
    and their masks ``(N, n, 1, H, W)``: each pixel from the inpainting in which it was removed."""
    _check_pair(inpainted, masks, "inpaintings")
    if inpainted.dim() != 5 or inpainted.shape[1] != masks.shape[1]:
        raise InputError(f"inpaintings must have shape (N, n, C, H, W) with n = {masks.shape[1]}, "
                         f"got {tuple(inpainted.shape)}")
    return (inpainted * (1 - masks.to(inpainted.dtype))).sum(1)


class PartitionMask:
    """The inpainter's training corruption, ``transform(images, generator)``: each image masked by one of
    the ``n`` masks of a fresh random partition (the one at a uniformly random index), so the inpainter
    learns to fill ``1/n`` of the pixels, as it must at test time."""

    def __init__(self, n: int) -> None:
        self.n = positive_int(n, "n")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise InputError("PartitionMask expects images of shape (B, C, H, W)")
        b = x.shape[0]
        masks = partition_masks(b, self.n, (x.shape[2], x.shape[3]), generator=generator, device=x.device,
                                dtype=x.dtype)
        pick = (uniform((b,), generator, x.device) * self.n).long().clamp_max(self.n - 1)
        return x * masks[torch.arange(b, device=x.device), pick]

    def config(self) -> dict[str, object]:
        return {"transform": "partition_mask", "n": self.n}

    def __repr__(self) -> str:
        return f"PartitionMask(n={self.n})"
