"""SFM-Defense: a sparse feature masker, then an image preprocessing, then the classifier (Yu, Wang et al. 2022).

At test time (Section 5.3) the masker ``M`` (trained with its classifier by Algorithm 1:
:mod:`maskdefense.training.tasks.sfm`) gives a one-channel mask ``m = M(x)`` in [0, 1], the masked image
``x * m`` (every channel) goes through the preprocessing ``T`` (Section 5.3: bit-depth reduction, median
filter or non-local means, from feature squeezing), and the base classifier labels the result.

It is the preprocessing defense :class:`~maskdefense.defenses.squeeze.Squeeze` applied to the masked image:

* ``forward(x) = base(T(x * M(x)))`` with ``T`` through BPDA (identity backward pass; Athalye et al. 2018),
  so the adaptive (white-box) attacker differentiates masker and classifier end to end; a randomized ``T``
  is averaged over ``n_grad`` draws (log of the mean softmax);
* ``predict(x, generator=)``: the pipeline itself, ``argmax base(T(x * M(x)))`` (one draw of a randomized ``T``);
* ``oblivious_target()``: the paper's gray-box attacker knows the classifier *and* the masker but not the
  preprocessing (Section 6.1 (2)): it attacks ``base(x * M(x))``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from torch import Tensor, nn

from ..models.masker import apply_masker
from ..ops.squeeze import Squeezer
from .base import Contract
from .squeeze import Squeeze

__all__ = ["SFMDefense", "MaskedClassifier"]


class MaskedClassifier(nn.Module):
    """``base(x * masker(x))``: the masker and the classifier, without preprocessing."""

    def __init__(self, masker: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.masker, self.base = masker, base

    def forward(self, x: Tensor) -> Tensor:
        return self.base(apply_masker(self.masker, x)[0])


class SFMDefense(Squeeze):
    """SFM-Defense around a ``base`` classifier (see the module docstring).

    masker : the trained mask generator (returns ``m`` of shape ``(N, 1, H, W)`` in [0, 1]).
    preprocess : the preprocessing ``T``: a :class:`~maskdefense.ops.squeeze.Squeezer`, a sequence of them
        (applied in order), or ``None``: the masker alone.
    n_grad, chunk_size : as for :class:`~maskdefense.defenses.squeeze.Squeeze`.
    """

    def __init__(self, base: nn.Module, masker: nn.Module, preprocess: Squeezer | Sequence[Squeezer] | None = None,
                 *, n_grad: int = 8, chunk_size: int = 256) -> None:
        super().__init__(base, () if preprocess is None else preprocess, n_grad=n_grad, chunk_size=chunk_size)
        self.masker = masker

    def inputs(self, x: Tensor) -> Tensor:
        """``x * M(x)``, differentiable."""
        return apply_masker(self.masker, x)[0]

    def oblivious_target(self) -> tuple[nn.Module, str]:
        return MaskedClassifier(self.masker, self.base), "masker and base model (no preprocessing)"

    def contract(self) -> Contract:
        return replace(super().contract(), components=("base", "masker"))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "defense": "sfm"}
