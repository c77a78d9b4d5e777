"""Mask generators: networks mapping images in [0, 1] to a one-channel soft mask in [0, 1] of the same size.

:class:`AttentionUNetMasker` is SFM-Defense's sparse feature masker (Yu, Wang et al. 2022, Section 6.1: an
Attention U-Net "as the backbone architecture of the mask generator"; Section 3.2: one mask channel for all
colour channels, every element in [0, 1]). The network is MONAI's ``AttentionUnet``
(``monai.networks.nets``, Apache-2.0; it needs only numpy and torch): the U-Net of Oktay et al. (2018)
whose skip connections pass through *additive attention gates*, ``x * sigmoid(psi(relu(W_g g + W_x x)))``
with ``g`` the decoder's upsampled features gating the encoder's skip ``x``. MONAI's gate takes ``g`` at the
skip's resolution (the upsampled decoder output) where Oktay et al. resample a coarser ``g``, the form of the
common re-implementations. A maintained implementation is preferred to writing the network again; it is
imported when a masker is built, so importing the model zoo stays light. The sigmoid on its one output
channel gives the mask.

:func:`apply_masker` applies a masker: ``x~ = x * m`` on every channel (Section 3.2).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..ops.masking import apply_mask
from .autoencoders import _ImageToImage
from .registry import MODELS

__all__ = ["AttentionUNetMasker", "apply_masker"]


class AttentionUNetMasker(_ImageToImage):
    """Attention U-Net mask generator (see the module docstring): ``(N, C, H, W)`` -> ``(N, 1, H, W)`` in [0, 1].

    in_channels, input_size : image channels and side (checked on every call).
    width : channels of the top level; level ``i`` has ``width * 2**i`` (64 with depth 4 is the usual
        Attention U-Net, ``(64, 128, 256, 512)``).
    depth : levels, >= 2; the image is halved ``depth - 1`` times, so ``input_size`` must be divisible by
        ``2**(depth - 1)``.
    """

    def __init__(self, in_channels: int = 3, input_size: int = 32, width: int = 64, depth: int = 4) -> None:
        super().__init__(in_channels, input_size)
        for name, v, low in (("width", width, 1), ("depth", depth, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if input_size % 2 ** (depth - 1):
            raise ValueError(f"depth {depth} halves the image {depth - 1} times: the side {input_size} must be "
                             f"divisible by {2 ** (depth - 1)}")
        from monai.networks.nets import AttentionUnet

        self.unet = AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=1,
                                  channels=[width * 2**i for i in range(depth)], strides=[2] * (depth - 1))

    def forward(self, x: Tensor) -> Tensor:
        self._shape_check(x)
        return self.unet(x).sigmoid()


def apply_masker(masker: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x * m, m)`` with ``m = masker(x)``, one mask ``(N, 1, H, W)`` multiplying every channel."""
    m = masker(x)
    return apply_mask(x, m), m


MODELS.add("attention_unet", AttentionUNetMasker, "Attention U-Net mask generator (MONAI), one-channel mask "
           "in [0, 1] (width=64, depth=4: the usual levels (64, 128, 256, 512); width=16 on a CPU)")
