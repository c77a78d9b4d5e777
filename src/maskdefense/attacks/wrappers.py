"""Model wrappers for attacks: :class:`DiverseInputModel` applies Xie et al.'s input diversity before the
model, so any library attack becomes its DI variant. (EOT and BPDA, the adaptive-attack wrappers, are
shared operators: :mod:`maskdefense.ops.eot`, :mod:`maskdefense.ops.bpda`.)
"""

from __future__ import annotations

from torch import Tensor, nn

from .backends.momentum import diverse_input

__all__ = ["DiverseInputModel"]


class DiverseInputModel(nn.Module):
    """``model(DI(x))`` with Xie et al.'s input diversity (probability ``p``) on every call."""

    def __init__(self, model: nn.Module, p: float = 0.5, resize_rate: float = 0.9) -> None:
        super().__init__()
        self.model = model
        self.p = p
        self.resize_rate = resize_rate

    def forward(self, x: Tensor) -> Tensor:
        return self.model(diverse_input(x, self.p, self.resize_rate))
