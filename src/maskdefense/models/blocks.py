"""Reusable network blocks: the feature-denoising block of Xie, Wu, van der Maaten, Yuille and He
("Feature Denoising for Improving Adversarial Robustness", CVPR 2019).

Facts from the paper (Sec. 4, Fig. 4-5) and its code (facebookresearch/ImageNet-Adversarial-Training,
``resnet_model.denoising`` / ``non_local_op``): a block computes ``x + BN(conv1x1(denoise(x)))``, the 1x1
convolution without bias and the batch norm's scale initialised to zero, so that a new block is the identity
and can be inserted into a trained network without changing it. The non-local means ``denoise`` is
``y_i = (1 / C(x)) sum_j f(x_i, x_j) g(x_j)`` over all positions ``j`` of the feature map, with ``g`` the
identity (the code embeds only theta and phi) and

* *embedded Gaussian*: ``theta``, ``phi`` 1x1 convolutions to ``C/2`` channels (no bias, weights drawn from
  N(0, 0.01^2)), ``f = exp(theta_i . phi_j / sqrt(C/2))`` normalised over ``j`` (a softmax);
* *Gaussian*: the same without embeddings (``theta = phi = x``, scale ``1 / sqrt(C)``);
* *dot product*: ``f = theta_i . phi_j`` and ``C(x) = H * W`` (no softmax), embedded or not; the code's
  "DenoiseAll" ResNeXt uses the non-embedded dot product, its "ResNet Denoise" the embedded Gaussian;
* *mean filter*: average pooling with stride 1 (the paper's local baseline; the kernel size, 3 here, is our
  choice: the text gives none).

The dot product is computed as ``theta^T (phi g^T) / (H W)`` (associativity; the code does the same when
``C <= H W``), linear in the number of positions; the softmax versions build the ``(H W) x (H W)`` matrix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["NonLocalDenoise", "DENOISE_MODES"]

#: mode -> (embed theta/phi, softmax); ``"mean"`` is the local mean filter.
DENOISE_MODES: dict[str, tuple[bool, bool] | None] = {
    "embedded_gaussian": (True, True), "gaussian": (False, True),
    "embedded_dot_product": (True, False), "dot_product": (False, False), "mean": None,
}


class NonLocalDenoise(nn.Module):
    """Feature-denoising block ``x + BN(conv1x1(denoise(x)))`` on ``channels`` feature maps (see the module
    docstring); ``mode`` one of :data:`DENOISE_MODES`, ``kernel_size`` the mean filter's side."""

    def __init__(self, channels: int, mode: str = "embedded_gaussian", kernel_size: int = 3) -> None:
        super().__init__()
        if mode not in DENOISE_MODES:
            raise ValueError(f"unknown denoising mode {mode!r}; known: {sorted(DENOISE_MODES)}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        self.mode, self.kernel_size = mode, kernel_size
        kind = DENOISE_MODES[mode]
        self.embed, self.softmax = kind if kind is not None else (False, False)
        if self.embed:
            inner = max(1, channels // 2)
            self.theta = nn.Conv2d(channels, inner, 1, bias=False)
            self.phi = nn.Conv2d(channels, inner, 1, bias=False)
            for conv in (self.theta, self.phi):
                nn.init.normal_(conv.weight, std=0.01)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def denoise(self, x: Tensor) -> Tensor:
        """The denoising operation alone (before the 1x1 convolution, batch norm and residual)."""
        if self.mode == "mean":
            return F.avg_pool2d(x, self.kernel_size, stride=1, padding=self.kernel_size // 2, count_include_pad=False)
        n, c, h, w = x.shape
        g = x.flatten(2)  # (N, C, HW)
        theta, phi = (self.theta(x).flatten(2), self.phi(x).flatten(2)) if self.embed else (g, g)
        if self.softmax:
            f = torch.einsum("ndi,ndj->nij", theta, phi) / math.sqrt(theta.shape[1])
            y = torch.einsum("nij,ncj->nci", torch.softmax(f, dim=-1), g)
        else:
            y = torch.einsum("ndi,ndc->nci", theta, torch.einsum("ndj,ncj->ndc", phi, g)) / (h * w)
        return y.reshape(n, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn(self.conv(self.denoise(x)))

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (f", kernel_size={self.kernel_size}" if self.mode == "mean" else "")
