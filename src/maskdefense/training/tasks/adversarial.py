"""Adversarial training: the model is trained on adversarial examples of each batch.

``mode="pgd"`` is Madry et al.'s PGD adversarial training (``steps`` steps of size ``alpha`` in the
L-infinity ball of radius ``eps``, from a uniform random start); ``mode="fast"`` is Wong et al.'s "fast"
adversarial training, one FGSM step of ``1.25 * eps`` from a uniform random start: about ``steps`` times
cheaper, the CPU option. The inner attack is written here in plain torch (training does not import the
attack libraries); it runs with the model in its training mode, as the papers' code does.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...seeding import uniform
from ..transforms import Transform
from .base import Hook
from .classify import ClassificationTask


def pgd_linf(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
             generator: torch.Generator | None = None, random_start: bool = True) -> Tensor:
    """Untargeted L-infinity PGD on the cross-entropy: ``steps`` signed-gradient steps of size ``alpha``,
    each projected onto the ``eps`` ball around ``x`` and onto ``[0, 1]``; the start is uniform in the
    ball when ``random_start`` (drawn from ``generator``). Returns detached adversarial images; the
    model's parameter gradients are not touched."""
    x = x.detach()
    if random_start:
        u = uniform(tuple(x.shape), generator, x.device).to(x.dtype)
        delta = ((x + (2 * u - 1) * eps).clamp_(0, 1) - x)
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp_(-eps, eps)
        delta = (x + delta).clamp_(0, 1) - x
    return (x + delta).detach()


class AdversarialTask(ClassificationTask):
    """Adversarial training of ``model`` against L-infinity attacks of radius ``eps`` (see the module
    docstring). ``alpha`` defaults to ``2.5 * eps / steps`` for PGD (Madry et al.'s rule) and ``1.25 * eps``
    for fast; ``transform`` (if any) is applied before the attack. Metrics: ``loss`` and ``accuracy`` on
    the adversarial training batches; validation: clean ``accuracy``."""

    name = "adversarial"

    def __init__(self, model: nn.Module, eps: float, *, mode: str = "pgd", steps: int = 10, alpha: float | None = None,
                 random_start: bool = True, transform: Transform | None = None, extra: nn.Module | None = None,
                 hooks: Sequence[Hook] = ()) -> None:
        attack = self.attack_settings(eps, mode=mode, steps=steps, alpha=alpha, random_start=random_start)
        super().__init__(model, transform=transform, extra=extra, hooks=hooks)
        self.mode, self.eps, self.alpha = attack["mode"], attack["eps"], attack["alpha"]
        self.steps, self.random_start = attack["steps"], attack["random_start"]

    @staticmethod
    def attack_settings(eps: float, *, mode: str = "pgd", steps: int = 10, alpha: float | None = None,
                        random_start: bool = True) -> dict[str, Any]:
        """The inner attack these arguments give, with every default filled in (what the task's
        configuration records; a training key can be computed from it before any network exists)."""
        if mode not in ("pgd", "fast"):
            raise ValueError(f"mode must be 'pgd' or 'fast', got {mode!r}")
        if not eps > 0 or steps < 1 or (alpha is not None and not alpha > 0):
            raise ValueError("eps and alpha must be > 0 and steps >= 1")
        steps = 1 if mode == "fast" else int(steps)
        alpha = float(alpha) if alpha is not None else (1.25 * eps if mode == "fast" else 2.5 * eps / steps)
        return {"mode": mode, "norm": "linf", "eps": float(eps), "alpha": alpha, "steps": steps,
                "random_start": True if mode == "fast" else bool(random_start)}

    def inputs(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        x = super().inputs(x, y, generator)
        return pgd_linf(self.model, x, y, self.eps, self.alpha, self.steps, generator, self.random_start)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "attack": self.attack_settings(self.eps, mode=self.mode, steps=self.steps,
                                                                   alpha=self.alpha, random_start=self.random_start)}
