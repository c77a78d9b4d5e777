"""Post-step hooks: ``hook(task, phase)``, run under ``torch.no_grad()`` after every optimizer step, on
the networks the phase trains (``task.trains(phase)``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ParsevalRetraction:
    """Parseval networks' retraction (Cisse et al., 2017) after each step: ``W <- (1 + beta) W - beta W W^T W``
    for the weight of every linear and convolution layer (a convolution's weight flattened to
    ``(out_channels, in_channels * kh * kw)``). It pulls each weight matrix towards a Parseval tight
    frame (singular values 1). The paper's ``beta`` is 0.0003."""

    def __init__(self, beta: float = 0.0003, layers: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)) -> None:
        if not 0 < beta < 0.5:
            raise ValueError(f"beta must lie in (0, 0.5), got {beta!r}")
        self.beta, self.layers = float(beta), tuple(layers)

    @torch.no_grad()
    def retract(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, self.layers):
                w = m.weight.view(m.weight.shape[0], -1)
                # W W^T W with the smaller Gram matrix
                wwtw = w @ (w.t() @ w) if w.shape[0] > w.shape[1] else (w @ w.t()) @ w
                w.mul_(1 + self.beta).sub_(wwtw, alpha=self.beta)

    def __call__(self, task: Any, phase: str) -> None:
        for name in task.trains(phase):
            self.retract(task.networks[name])

    def config(self) -> dict[str, Any]:
        return {"hook": "parseval_retraction", "beta": self.beta, "layers": [t.__name__ for t in self.layers]}
