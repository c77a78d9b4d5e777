"""The defense interface.

A defense is an ``nn.Module`` that takes images in ``[0, 1]`` (shape ``(N, C, H, W)``) and returns
logits, so that any attack library can attack it end to end. A randomized defense returns the log of its
mean softmax over its random samples: a valid logit vector, never raw probabilities.

Beyond ``forward`` a defense exposes:

* ``base``: the undefended classifier underneath (the gray-box / oblivious attacker's target);
* ``randomized``: whether two calls on the same input may differ (the harness then demands EOT);
* ``predict(x, generator=...)``: the defense's actual decision (for a vote classifier, the majority
  vote), which may differ from ``forward(x).argmax(1)``; ``-1`` means abstain.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ABSTAIN = -1


class Defense(nn.Module):
    randomized: bool = False
    #: True when forward() contains steps with no useful gradient (quantization, median filter ...);
    #: the harness then asks for BPDA in the adaptive threat model.
    non_differentiable: bool = False

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The defense's decision per image (``ABSTAIN`` = -1 allowed). Default: argmax of forward."""
        return self(x).argmax(1)

    def config(self) -> dict[str, object]:
        """JSON-serializable description of the defense (written into every result record)."""
        return {"defense": type(self).__name__}


class NoDefense(Defense):
    """The undefended base model, wrapped so that it has the defense interface."""

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)

    def config(self) -> dict[str, object]:
        return {"defense": "none"}
