"""SFM-Defense: a sparse feature masker, then an image preprocessing, then the classifier (Yu, Wang et al. 2022).

At test time (Section 5.3) the masker ``M`` (trained with its classifier by Algorithm 1:
:mod:`maskdefense.training.tasks.sfm`) gives a one-channel mask ``m = M(x)`` in [0, 1], the masked image
``x * m`` (every channel) goes through the preprocessing ``T`` (Section 5.3: bit-depth reduction, median
filter or non-local means, from feature squeezing), and the base classifier labels the result.

* ``forward(x) = base(T(x * M(x)))`` with ``T`` through BPDA (identity backward pass; Athalye et al. 2018),
  so the adaptive (white-box) attacker differentiates masker and classifier end to end; a randomized ``T``
  is averaged over ``n_grad`` draws (log of the mean softmax);
* ``predict(x)``: the pipeline itself, ``argmax base(T(x * M(x)))`` (one draw of a randomized ``T``);
* ``oblivious_target()``: the paper's gray-box attacker knows the classifier *and* the masker but not the
  preprocessing (Section 6.1 (2)): it attacks ``base(x * M(x))``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from ..models.masker import apply_masker
from ..ops.bpda import bpda
from ..ops.eot import log_mean_softmax
from ..validation import check_images
from .base import Contract, Defense

__all__ = ["SFMDefense", "MaskedClassifier"]


class MaskedClassifier(nn.Module):
    """``base(x * masker(x))``: the masker and the classifier, without preprocessing."""

    def __init__(self, masker: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.masker, self.base = masker, base

    def forward(self, x: Tensor) -> Tensor:
        return self.base(apply_masker(self.masker, x)[0])


def _describe(preprocess: nn.Module | None) -> Any:
    """The preprocessing's ``config()`` (else its class name; ``None`` without preprocessing)."""
    if preprocess is None:
        return None
    return preprocess.config() if callable(getattr(preprocess, "config", None)) else type(preprocess).__name__


class SFMDefense(Defense):
    """SFM-Defense around a ``base`` classifier (see the module docstring).

    masker : the trained mask generator (returns ``m`` of shape ``(N, 1, H, W)`` in [0, 1]).
    preprocess : the image preprocessing ``T`` (image -> image, same shape; its ``randomized`` attribute, when
        true, makes the defense randomized), or ``None``: the masker alone.
    n_grad : draws of a randomized ``T`` averaged in :meth:`forward` (1 for a deterministic one).
    """

    def __init__(self, base: nn.Module, masker: nn.Module, preprocess: nn.Module | None = None, *,
                 n_grad: int = 8) -> None:
        super().__init__(base)
        if isinstance(n_grad, bool) or not isinstance(n_grad, int) or n_grad < 1:
            raise ValueError(f"n_grad must be a positive int, got {n_grad!r}")
        self.masker, self.preprocess = masker, preprocess
        self.randomized = bool(getattr(preprocess, "randomized", False))
        self.n_grad = n_grad if self.randomized else 1

    def masked(self, x: Tensor) -> Tensor:
        """``x * M(x)``, differentiable."""
        return apply_masker(self.masker, x)[0]

    def forward(self, x: Tensor) -> Tensor:
        z = self.masked(x)
        if self.preprocess is None:
            return self.base(z)
        outs = [self.base(bpda(self.preprocess, z)) for _ in range(self.n_grad)]
        return log_mean_softmax(torch.stack(outs)) if self.randomized else outs[0]

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``argmax base(T(x * M(x)))``: the defense's pipeline, one draw of ``T``."""
        z = self.masked(check_images(x))
        return self.base(self.preprocess(z) if self.preprocess is not None else z).argmax(1)

    def oblivious_target(self) -> tuple[nn.Module, str]:
        return MaskedClassifier(self.masker, self.base), "masker and base model (no preprocessing)"

    def contract(self) -> Contract:
        what = json.dumps(_describe(self.preprocess), sort_keys=True, separators=(",", ":"))
        steps = (f"preprocess {what}",) if self.preprocess is not None else ()
        return Contract(randomized=self.randomized, samples_per_forward=self.n_grad, bpda_steps=steps,
                        components=("base", "masker"))

    def config(self) -> dict[str, Any]:
        return {"defense": "sfm", "preprocess": _describe(self.preprocess), "n_grad": self.n_grad}
