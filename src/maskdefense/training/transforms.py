"""Batch transforms of the training loop: ``transform(images, generator) -> images``.

Randomness comes from the generator the trainer passes (seeded, saved with the training state), so a
resumed run draws the same crops, flips and noise as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from ..seeding import normal, uniform


class Transform(Protocol):
    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


def augment(x: Tensor, generator: torch.Generator, crop_padding: int = 0, hflip: bool = False) -> Tensor:
    """Random crop with zero padding (each image shifted by up to ``crop_padding`` pixels per axis) and
    random horizontal flip (probability 1/2 per image); ``x`` unchanged when both are off."""
    n, _, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        xp = F.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=generator.device).to(x.device)
        rows = off[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = off[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = xp[idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if hflip:
        flip = uniform((n,), generator, x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class GaussianNoise:
    """``x + sigma * N(0, 1)`` per pixel, clipped to ``[0, 1]`` unless ``clip=False`` (a denoiser's
    training corruption; randomized smoothing adds unclipped noise)."""

    def __init__(self, sigma: float, clip: bool = True) -> None:
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.sigma, self.clip = float(sigma), bool(clip)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        noise = normal(tuple(x.shape), generator, x.device).to(x.dtype)
        y = x + self.sigma * noise
        return y.clamp(0.0, 1.0) if self.clip else y

    def config(self) -> dict[str, Any]:
        return {"transform": "gaussian_noise", "sigma": self.sigma, "clip": self.clip}

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma}, clip={self.clip})"
