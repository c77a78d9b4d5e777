"""Image-to-image networks: autoencoders that reform, denoise or inpaint images in [0, 1].

* :class:`REDNet` -- the convolutional encoder-decoder with symmetric skip connections of Mao, Shen and Yang
  (NIPS 2016, "RED-Net"), in the simplified form REMIX uses as reformer and inpainter: ``depth`` 3x3
  convolutions (ReLU) then ``depth`` mirrored 3x3 transposed convolutions; every ``skip``-th encoder output is
  added to the input of its mirrored decoder layer, and the input image to the output (the network predicts a
  residual), clamped to [0, 1]. Sizes stay ``H x W`` throughout (padding 1, no pooling), as in the paper's
  restoration networks. Written here: no maintained package ships this network for torch.
* :class:`DnCNN` -- the denoising CNN of Zhang, Zuo, Chen, Meng and Zhang (IEEE TIP 2017), the denoiser of
  Denoised Smoothing (Salman et al., NeurIPS 2020; microsoft/denoised-smoothing ``archs/dncnn.py``): a 3x3
  convolution with ReLU, ``depth - 2`` convolutions with batch norm and ReLU, and a last convolution back to the
  image channels, all ``width`` channels wide (the paper: 17 layers, 64 channels). It predicts the noise and
  returns ``x - noise``, *not* clamped (as the reference: the smoothed classifier feeds it unclipped noisy images).
* :class:`ConvAutoencoder` -- a plain stack of 3x3 convolutions with sigmoid activations and optional 2x2
  average pooling / upsampling (the autoencoders of the detector-and-reformer defense of Meng and Chen,
  CCS 2017; its presets name the layer lists).

Every one maps ``(N, C, H, W)`` in [0, 1] to the same shape (in [0, 1], except DnCNN's residual output) and
registers in
:data:`~maskdefense.models.registry.MODELS`.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..validation import check_images, positive_int
from .registry import MODELS

__all__ = ["REDNet", "ConvAutoencoder", "DnCNN"]


class _ImageToImage(nn.Module):
    def __init__(self, in_channels: int, input_size: int) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), int(input_size)

    def check_input(self, x: Tensor) -> Tensor:
        return check_images(x, channels=self.in_channels, size=self.input_size)

    def _shape_check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.input_size \
                or x.shape[3] != self.input_size:
            check_images(x, channels=self.in_channels, size=self.input_size)


class REDNet(_ImageToImage):
    """Simplified RED-Net (see the module docstring).

    in_channels, input_size : image channels and side (checked on every call).
    width : channels of every hidden layer (Mao et al.: 64).
    depth : convolutions in the encoder (and transposed convolutions in the decoder), >= 1.
    skip : an encoder output is added to the mirrored decoder input every ``skip`` layers (Mao et al.: 2).
    """

    def __init__(self, in_channels: int = 3, input_size: int = 32, width: int = 64, depth: int = 5,
                 skip: int = 2) -> None:
        super().__init__(in_channels, input_size)
        for name, v in (("width", width), ("depth", depth), ("skip", skip)):
            positive_int(v, name)
        self.depth, self.skip = depth, skip
        chans = [in_channels] + [width] * depth
        self.encoder = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(depth))
        self.decoder = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 3, padding=1)
                                     for i in reversed(range(depth)))
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        self._shape_check(x)
        feats = []
        h = x
        for conv in self.encoder:
            h = self.act(conv(h))
            feats.append(h)
        for j, deconv in enumerate(self.decoder):
            i = self.depth - 1 - j  # the mirrored encoder layer of decoder layer j
            if j > 0 and (i + 1) % self.skip == 0:
                h = self.act(h + feats[i])
            h = deconv(h)
            if j < self.depth - 1:
                h = self.act(h)
        return (x + h).clamp(0.0, 1.0)


class ConvAutoencoder(_ImageToImage):
    """3x3 convolutions with sigmoid activations (padding 1); ``"pool"`` / ``"up"`` entries in ``layers``
    are 2x2 average pooling / nearest upsampling. The last convolution has ``in_channels`` filters (the image),
    so ``layers`` lists the hidden filter counts only, e.g. ``(3, "pool", 3, 3, "up", 3)``. (The reference
    implementation's L2 activity regularization of weight 1e-9 is left out: at that weight it changes nothing.)"""

    def __init__(self, in_channels: int = 1, input_size: int = 28, layers: Sequence[int | str] = (3, 3)) -> None:
        super().__init__(in_channels, input_size)
        mods: list[nn.Module] = []
        c = in_channels
        side = input_size
        for item in list(layers) + [in_channels]:
            if item == "pool":
                if side % 2:
                    raise ValueError(f"cannot pool an odd side {side}")
                mods.append(nn.AvgPool2d(2))
                side //= 2
            elif item == "up":
                mods.append(nn.Upsample(scale_factor=2, mode="nearest"))
                side *= 2
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                mods += [nn.Conv2d(c, item, 3, padding=1), nn.Sigmoid()]
                c = item
            else:
                raise ValueError(f"layers entries are positive ints, 'pool' or 'up', got {item!r}")
        if side != input_size:
            raise ValueError(f"layers {list(layers)} change the image side {input_size} to {side}")
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        self._shape_check(x)
        return self.net(x)


class DnCNN(_ImageToImage):
    """DnCNN (see the module docstring): ``width`` channels, ``depth`` convolutions in all (>= 2; the paper and
    Denoised Smoothing: 17 layers of 64 channels). Output ``x - net(x)`` (residual learning), unclamped."""

    def __init__(self, in_channels: int = 3, input_size: int = 32, width: int = 64, depth: int = 17) -> None:
        super().__init__(in_channels, input_size)
        positive_int(width, "width")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an int >= 2, got {depth!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, in_channels, 3, padding=1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        self._shape_check(x)
        return x - self.net(x)


MODELS.add("rednet", REDNet, "simplified RED-Net: conv/deconv autoencoder with symmetric skips (Mao et al. 2016)")
MODELS.add("dncnn", DnCNN, "DnCNN residual denoiser (Zhang et al. 2017; Denoised Smoothing's): depth=17, width=64")
MODELS.add("conv_ae", ConvAutoencoder, "sigmoid convolutional autoencoder with optional pooling (layers=...)")
