"""A network trained through a frozen one: Denoised Smoothing's denoiser (Salman et al., NeurIPS 2020)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..transforms import GaussianNoise
from ..predict import eval_mode
from .base import Hook, Task, batched_mean, eval_batch_size, transform_batched


class DenoiserTask(Task):
    """Train ``denoiser`` D in front of a frozen ``classifier`` f on Gaussian-noised images
    ``x + sigma * N(0, 1)`` (unclipped, as randomized smoothing samples them).

    ``objective="stability"``: cross-entropy of ``f(D(x + noise))`` against f's own label on the clean
    image, ``argmax f(x)`` (the paper's stability objective; true labels are not used); ``"mse"``:
    ``||D(x + noise) - x||^2`` per pixel. f is never updated: it stays in eval mode with its parameters
    frozen, and gradients flow through it into D only. Both are saved, as the components ``"denoiser"``
    and ``"classifier"``. Metrics: ``loss``, and for stability ``agreement`` (f on the denoised image
    agrees with f on the clean one); validation: ``accuracy`` of f on denoised noisy images, and
    ``noisy_accuracy`` of f on the noisy images without the denoiser."""

    name = "denoiser"

    def __init__(self, denoiser: nn.Module, classifier: nn.Module, sigma: float, *, objective: str = "stability",
                 hooks: Sequence[Hook] = ()) -> None:
        if objective not in ("stability", "mse"):
            raise ValueError(f"objective must be 'stability' or 'mse', got {objective!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        super().__init__({"denoiser": denoiser, "classifier": classifier}, hooks=hooks)
        self.denoiser, self.classifier = denoiser, classifier
        self.sigma, self.objective = float(sigma), objective

    def trains(self, phase: str) -> tuple[str, ...]:
        return ("denoiser",)

    def _noisy(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return GaussianNoise(self.sigma, clip=False)(x, generator)

    def loss(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        denoised = self.denoiser(self._noisy(x, generator))
        if self.objective == "mse":
            return F.mse_loss(denoised, x), {}
        with torch.no_grad():
            target = self.classifier(x).argmax(1)
        logits = self.classifier(denoised)
        return F.cross_entropy(logits, target), {"agreement": (logits.detach().argmax(1) == target).float().mean()}

    def validate(self, val: tuple[Tensor, Tensor], generator: torch.Generator) -> dict[str, float]:
        with eval_mode(self.denoiser):
            bs = eval_batch_size(self)
            noisy = transform_batched(self._noisy, val[0], generator, bs)
            f = self.classifier
            return {"accuracy": batched_mean(lambda a, y: f(self.denoiser(a)).argmax(1) == y, noisy, val[1], bs),
                    "noisy_accuracy": batched_mean(lambda a, y: f(a).argmax(1) == y, noisy, val[1], bs)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "sigma": self.sigma, "objective": self.objective}
