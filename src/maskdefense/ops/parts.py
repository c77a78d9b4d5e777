"""Part sets: which parts a segmentation shows, and how similar two part sets are.

A part extractor outputs per-pixel logits ``(N, 1 + P, H, W)``: channel 0 the background, channel ``1 + p``
part ``p``. Its *hard* part set keeps the parts whose predicted area (fraction of pixels whose arg-max is the
part) reaches a threshold; the *soft* set, for gradients, scores each part
``sigmoid((mean softmax probability - threshold) / temperature)``. As the logits sharpen (the softmax tends
to the arg-max) and the temperature tends to 0 the soft set tends to the hard one (away from the threshold).

Similarity is the Jaccard index ``|A n B| / |A u B|`` of two sets, written for membership vectors in [0, 1]
as ``sum(a b) / sum(a + b - a b)`` (the product t-norm: exact for binary vectors, smooth for soft ones);
two empty sets have similarity 0 (distance 1). The class-attribute matrix (which parts each class has) is
built by :func:`maskdefense.data.attribute_matrix`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["part_areas", "parts_present", "soft_parts_present", "jaccard_similarity", "jaccard_distance"]


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 4 or logits.shape[1] < 2:
        raise ValueError(f"part logits must be (N, 1 + P, H, W) with P >= 1, got {tuple(logits.shape)}")


def _check_area(area_threshold: float) -> None:
    if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float)) or not 0 < area_threshold <= 1:
        raise ValueError(f"area_threshold must be in (0, 1], got {area_threshold!r}")


def part_areas(logits: Tensor) -> Tensor:
    """``(N, P)``: the fraction of pixels whose arg-max channel is part ``p`` (background excluded)."""
    _check_logits(logits)
    won = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1])  # (N, H, W, 1 + P)
    return won.flatten(1, 2).float().mean(1)[:, 1:]


def parts_present(logits: Tensor, area_threshold: float) -> Tensor:
    """``(N, P)`` bool: part ``p`` is present when its predicted area is at least ``area_threshold``."""
    _check_area(area_threshold)
    return part_areas(logits) >= area_threshold


def soft_parts_present(logits: Tensor, area_threshold: float, temperature: float) -> Tensor:
    """``(N, P)`` in (0, 1): ``sigmoid((mean over pixels of softmax_p - area_threshold) / temperature)``."""
    _check_logits(logits)
    _check_area(area_threshold)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    area = torch.softmax(logits, dim=1).flatten(2).mean(2)[:, 1:]
    return torch.sigmoid((area - area_threshold) / temperature)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"part sets must be (N, P) and (K, P), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.to(torch.result_type(a, b)), b.to(torch.result_type(a, b))
    if not a.is_floating_point():
        a, b = a.double(), b.double()
    inter = a @ b.T
    return inter, a.sum(1, keepdim=True) + b.sum(1)[None] - inter


def jaccard_similarity(a: Tensor, b: Tensor) -> Tensor:
    """``(N, K)``: the Jaccard index of every row of ``a`` ``(N, P)`` with every row of ``b`` ``(K, P)``
    (membership in [0, 1]; bool or integer sets are computed in float64)."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def jaccard_distance(a: Tensor, b: Tensor) -> Tensor:
    """``(N, K)``: ``1 - jaccard_similarity``, computed as ``|A u B \\ A n B| / |A u B|`` so that for hard
    sets in float64 it is the correctly rounded fraction."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, (union - inter) / union.clamp_min(1e-12), torch.ones_like(inter))
