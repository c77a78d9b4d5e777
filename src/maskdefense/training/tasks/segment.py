"""Part segmentation: a part extractor learns per-pixel part labels (the part extractor of a part-based defense).

The network maps images to logits ``(N, 1 + P, H, W)`` (channel 0 the background, ``1 + p`` part ``p``,
:mod:`maskdefense.ops.parts`); the targets are part maps ``(N, H, W)`` with the same labels
(:attr:`maskdefense.data.PartData.part_map`). The loss is the per-pixel cross-entropy over the ``1 + P``
labels, averaged over pixels. A training batch's part maps are cropped and flipped with their images (the
trainer's augmentation draws once for both; a padded border is background).

Validation metrics, over the whole set (:func:`segmentation_metrics`):

* ``pixel_accuracy``: fraction of pixels whose arg-max label is the true one (background included);
* ``mean_iou``: mean over the parts (background excluded) of ``|pred n true| / |pred u true|`` counted over
  all pixels of the set, over the parts that occur in the prediction or the truth;
* ``part_set_accuracy``: fraction of images whose set of parts present (area at least ``area_threshold`` of
  the image, :func:`~maskdefense.ops.parts.parts_present`) equals the true set by the same rule: what a
  part-based defense decides by.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...ops.parts import parts_present
from ...validation import InputError
from ..predict import eval_mode
from ..transforms import augment
from .base import Hook, Task, eval_batch_size

__all__ = ["SegmentationTask", "segmentation_metrics"]


def _one_hot_logits(part_map: Tensor, channels: int) -> Tensor:
    """Part maps ``(N, H, W)`` as logits ``(N, channels, H, W)`` whose arg-max is the map."""
    return F.one_hot(part_map.long(), channels).permute(0, 3, 1, 2).float()


@torch.no_grad()
def segmentation_metrics(net: nn.Module, images: Tensor, part_maps: Tensor, *, area_threshold: float,
                         batch_size: int = 1000) -> dict[str, float]:
    """``pixel_accuracy``, ``mean_iou`` and ``part_set_accuracy`` of ``net`` on ``images`` against
    ``part_maps`` (see the module docstring), computed in batches."""
    if not len(images):
        raise ValueError("no images to measure the segmentation on")
    correct = sets_equal = 0
    inter = union = None
    for i in range(0, len(images), batch_size):
        z = net(images[i : i + batch_size]).float()
        truth = part_maps[i : i + batch_size].long()
        pred = z.argmax(1)
        correct += int((pred == truth).sum())
        hot_p = F.one_hot(pred, z.shape[1]).flatten(0, 2).bool()
        hot_t = F.one_hot(truth, z.shape[1]).flatten(0, 2).bool()
        i_b, u_b = (hot_p & hot_t).sum(0), (hot_p | hot_t).sum(0)
        inter, union = (i_b, u_b) if inter is None else (inter + i_b, union + u_b)
        found = parts_present(z, area_threshold)
        true = parts_present(_one_hot_logits(truth, z.shape[1]), area_threshold)
        sets_equal += int((found == true).all(1).sum())
    assert inter is not None and union is not None
    seen = union[1:] > 0
    iou = inter[1:][seen].double() / union[1:][seen].double()
    return {"pixel_accuracy": correct / part_maps.numel(),
            "mean_iou": float(iou.mean()) if seen.any() else float("nan"),
            "part_set_accuracy": sets_equal / len(images)}


class SegmentationTask(Task):
    """Train ``net`` (component ``"model"``) to label every pixel with its part (see the module docstring).
    ``area_threshold``: the part-set rule of the ``part_set_accuracy`` metric. Training metrics: ``loss``,
    ``pixel_accuracy``; validation: :func:`segmentation_metrics`."""

    name = "segmentation"

    def __init__(self, net: nn.Module, *, area_threshold: float = 0.01, hooks: Sequence[Hook] = ()) -> None:
        if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float)) \
                or not 0 < area_threshold <= 1:
            raise ValueError(f"area_threshold must be in (0, 1], got {area_threshold!r}")
        super().__init__({"model": net}, hooks=hooks)
        self.net, self.area_threshold = net, float(area_threshold)

    def check_targets(self, y: Any, n: int, name: str = "labels") -> Tensor:
        """Part maps ``(n, H, W)`` of non-negative integers."""
        if not isinstance(y, Tensor) or y.dim() != 3 or y.shape[0] != n:
            raise InputError(f"{name} must be part maps of shape ({n}, H, W), got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        if y.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
            raise InputError(f"{name} must be an integer tensor (part labels), got {y.dtype}")
        if n and int(y.min()) < 0:
            raise InputError(f"{name} must be >= 0 (0 = background, 1 + p = part p), got {int(y.min())}")
        return y

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator, crop_padding: int,
                hflip: bool) -> tuple[Tensor, Tensor]:
        """Images and their part maps cropped and flipped alike (the map rides along as one more channel)."""
        both = augment(torch.cat([x, y[:, None].to(x.dtype)], 1), generator, crop_padding, hflip)
        return both[:, :-1].contiguous(), both[:, -1].round().to(y.dtype)

    def loss(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.net(x)
        target = y.long()
        return self.cross_entropy(logits, target), {"pixel_accuracy": (logits.detach().argmax(1) == target).float().mean()}

    def validate(self, val: tuple[Tensor, Tensor], generator: torch.Generator) -> dict[str, float]:
        with eval_mode(self.net):
            return segmentation_metrics(self.net, val[0], val[1], area_threshold=self.area_threshold,
                                        batch_size=eval_batch_size(self))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "area_threshold": self.area_threshold}
