"""Preprocessing defenses: image squeezers (:mod:`maskdefense.ops.squeeze`) in front of the base classifier.

Two of SFM-Defense's baselines (Yu, Wang et al. 2022, Section 6.3) are of this kind:

* "FS", feature squeezing (Xu, Evans, Qi; NDSS 2018) used as preprocessing: one squeezer (bit depth, median
  filter or non-local means, the three SFM-Defense applies after its mask, Section 5.3), or a chain of them
  applied in order. (Xu et al. themselves *detect* adversarial inputs by comparing the predictions on the
  raw and squeezed input; SFM-Defense uses the squeezers to purify, which is what this defense does.)
* "TVM", total-variation minimization over randomly kept pixels (Guo et al.; ICLR 2018): randomized.

In the shape of locuslab/smoothing's ``Smooth``:

* ``forward(x)``: ``base(squeeze(x))`` with every squeezer behind BPDA (identity backward), named in the
  contract; with a randomized squeezer, the log of the mean softmax over ``n_grad`` independent draws (EOT);
* ``predict(x, generator=)``: the base's class on one squeezed copy per image (one random draw for TVM).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..ops.eot import log_mean_softmax
from ..ops.squeeze import Squeezer
from ..validation import check_images, positive_int
from .base import Contract, Defense

__all__ = ["Squeeze"]


class Squeeze(Defense):
    """``squeezers`` (one :class:`~maskdefense.ops.squeeze.Squeezer` or a sequence, applied in order; an empty
    one is the base alone) in front of ``base``.

    n_grad : random draws averaged in :meth:`forward` when a squeezer is randomized (ignored otherwise).
    chunk_size : images per pass of the base network (bounds memory; never changes results: the squeezers
        see the whole batch, so the random draws do not depend on it).
    """

    def __init__(self, base: nn.Module, squeezers: Squeezer | Sequence[Squeezer], *, n_grad: int = 8,
                 chunk_size: int = 256) -> None:
        super().__init__(base)
        chain = [squeezers] if isinstance(squeezers, Squeezer) else list(squeezers)
        if not all(isinstance(s, Squeezer) for s in chain):
            raise ValueError("squeezers must be maskdefense.ops.squeeze.Squeezer instances")
        self.squeezers = nn.ModuleList(chain)
        self.randomized = any(s.randomized for s in chain)
        self.n_grad = positive_int(n_grad, "n_grad") if self.randomized else 1
        self.chunk_size = positive_int(chunk_size, "chunk_size")

    @property
    def steps(self) -> tuple[str, ...]:
        """The BPDA step of each squeezer: its name, numbered (``median#2``) when it occurs more than once."""
        counts, seen = Counter(s.name for s in self.squeezers), Counter()
        out = []
        for s in self.squeezers:
            seen[s.name] += 1
            out.append(s.name if counts[s.name] == 1 else f"{s.name}#{seen[s.name]}")
        return tuple(out)

    def inputs(self, x: Tensor) -> Tensor:
        """What the squeezers receive (differentiable): the images themselves; a subclass may transform them
        first (SFM-Defense masks them)."""
        return x

    def squeeze(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The squeezed images: every squeezer in order, each through BPDA (identity backward)."""
        for s in self.squeezers:
            x = s.bpda(x, generator)
        return x

    def _logits(self, x: Tensor, samples: int, generator: torch.Generator | None) -> Tensor:
        """Base logits ``(N, samples, K)``: copy ``j`` of image ``i`` squeezed at row ``i * samples + j``."""
        check_images(x.detach() if isinstance(x, Tensor) else x)
        z = self.squeeze(self.inputs(x).repeat_interleave(samples, 0), generator)
        out = torch.cat([self.base(z[i : i + self.chunk_size]) for i in range(0, z.shape[0], self.chunk_size)])
        return out.view(x.shape[0], samples, out.shape[-1])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Base logits on the squeezed input; randomized: log of the mean softmax over ``n_grad`` draws."""
        logits = self._logits(x, self.n_grad, generator)
        return log_mean_softmax(logits, dim=1) if self.randomized else logits[:, 0]

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The base's class on one squeezed copy per image."""
        return self._logits(x, 1, generator)[:, 0].argmax(1)

    def contract(self) -> Contract:
        return Contract(randomized=self.randomized, samples_per_forward=self.n_grad, bpda_steps=self.steps)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"defense": "squeeze", "squeezers": [s.config() for s in self.squeezers]}
        return {**cfg, "n_grad": self.n_grad} if self.randomized else cfg
