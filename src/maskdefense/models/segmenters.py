"""Part segmenters: images in [0, 1] -> per-pixel part logits ``(N, 1 + P, H, W)`` (channel 0 the background),
the part extractor of a part-based defense (:func:`maskdefense.ops.parts.parts_present` turns the logits into
the set of parts an image shows).

:class:`PartUNet` is MONAI's residual U-Net (``monai.networks.nets.UNet``, Kerfoot et al. 2018) behind the
zoo's input normalisation: a small fully convolutional network that keeps the image size, in place of the
Mask R-CNN of the reference implementation (too heavy for a CPU; a semantic segmentation gives the same set
of parts present, without instances).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .autoencoders import _ImageToImage
from .classifiers import Normalize
from .registry import MODELS

__all__ = ["PartUNet"]


class PartUNet(_ImageToImage):
    """U-Net part segmenter (see the module docstring).

    num_parts : ``P``; the output has ``1 + P`` channels.
    channels, strides : MONAI ``UNet`` channels per level and the strides between levels (``input_size`` must
        be divisible by their product).
    num_res_units : residual units per level (MONAI).
    """

    def __init__(self, num_parts: int = 44, in_channels: int = 3, input_size: int = 32,
                 channels: Sequence[int] = (16, 32, 64), strides: Sequence[int] = (2, 2), num_res_units: int = 1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, input_size)
        from monai.networks.nets import UNet

        if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
            raise ValueError(f"num_parts must be a positive int, got {num_parts!r}")
        if len(channels) != len(strides) + 1:
            raise ValueError(f"a U-Net needs one stride fewer than levels, got channels={list(channels)}, "
                             f"strides={list(strides)}")
        down = math.prod(int(s) for s in strides)
        if input_size % down:
            raise ValueError(f"input_size {input_size} is not divisible by the U-Net's total stride {down}")
        self.num_parts = num_parts
        self.normalize = Normalize(mean or [0.5] * in_channels, std or [0.5] * in_channels)
        self.net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=1 + num_parts,
                        channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units)

    def forward(self, x: Tensor) -> Tensor:
        self._shape_check(x)
        return self.net(self.normalize(x))


MODELS.add("part_unet", PartUNet, "part segmenter: MONAI residual U-Net, (N, 1 + P, H, W) part logits (num_parts=...)")
