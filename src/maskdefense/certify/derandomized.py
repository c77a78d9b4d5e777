"""Derandomized smoothing (Levine and Feizi, "(De)Randomized Smoothing for Certifiable Defense against
Patch Attacks", NeurIPS 2020) for any classifier of the library.

Every structured ablation is enumerated (:func:`~maskdefense.ops.ablation.band_masks`: ``W`` bands of
``band`` columns, or rows; :func:`~maskdefense.ops.ablation.block_masks`: ``H * W`` blocks of ``band x band``
pixels; both wrap around the edge), each ablated copy keeps only its band or block. Vote (the reference
code's ``predict_and_certify``): copy ``m`` votes for *every* class whose softmax is ``>= threshold``
(the reference's default ``--threshhold 0.2``; a threshold above 1/2 gives one vote at most), ``n_c`` is
the number of copies voting for ``c``, and the decision is the class with most votes, ties to the smaller
index (its stable sort).

Certificate (the paper's Theorem; the reference code's rule): a ``p x p`` patch intersects the kept band
of at most ``Delta = p + band - 1`` column ablations (``min(p + band - 1, W)`` once the bands wrap
around), of at most ``Delta = (p + band - 1)^2`` block ablations; each of those can lose the decision's
vote and add one to another class, so with ``c`` the decision and ``c'`` the runner-up the decision is
certified iff ``n_c - n_c' > 2 Delta``, or ``n_c - n_c' = 2 Delta`` and ``c < c'``.

How this differs from the reference: removed pixels take a constant ``fill`` (black by default) in the
model's own channels, where the reference feeds a 6-channel input (``x`` and ``1 - x`` kept, zeros
elsewhere) so that an ablated pixel differs from every real colour; the library's models and their
fine-tuning take 3 channels. The certificate does not depend on the encoding, only the accuracy.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..ops.ablation import band_masks, block_masks, patch_locations
from ..ops.vote import top_class
from .base import Certificate, Certifier, affected_copies, check_patch_sizes, location_margins, weakest

__all__ = ["DerandomizedSmoothing", "MODES"]

MODES = ("column", "row", "block")


class DerandomizedSmoothing(Certifier):
    """Column (row) or block smoothing with every ablation enumerated (see the module docstring).

    mode : ``"column"``, ``"row"`` or ``"block"``; band : the band width (the block side for blocks;
    the paper's CIFAR-10 column setting: 4); threshold : the softmax a class needs for a copy's vote.
    """

    def __init__(self, base: nn.Module, *, mode: str = "column", band: int = 4, threshold: float = 0.2,
                 fill: object = "black", n_grad: int | None = None, chunk_size: int = 2048) -> None:
        super().__init__(base, fill=fill, n_grad=n_grad, chunk_size=chunk_size)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(band, bool) or not isinstance(band, int) or band < 1:
            raise ValueError(f"band must be an int >= 1, got {band!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.mode, self.band, self.threshold = mode, band, float(threshold)

    def copy_masks(self, h: int, w: int) -> Tensor:
        """Every ablation's keep mask: ``(W, 1, H, W)`` columns, ``(H, ...)`` rows, ``(H * W, ...)`` blocks."""
        if self.mode == "block":
            return block_masks((h, w), self.band)
        return band_masks((h, w), self.band, self.mode)

    def passes(self, h: int, w: int) -> int:
        return h * w if self.mode == "block" else (w if self.mode == "column" else h)

    def delta(self, patch: int, h: int, w: int) -> int:
        """Ablations a ``patch x patch`` patch can affect (at most)."""
        span_h, span_w = min(patch + self.band - 1, h), min(patch + self.band - 1, w)
        return span_h * span_w if self.mode == "block" else (span_w if self.mode == "column" else span_h)

    @torch.no_grad()
    def copy_votes(self, x: Tensor) -> Tensor:
        """``(N, M, K)`` 0/1: copy ``m`` votes for every class whose softmax is ``>= threshold``."""
        x = self._check(x)
        probs = torch.softmax(self.masked_logits(x, self.copy_masks(x.shape[2], x.shape[3])), dim=2)
        return (probs >= self.threshold).long()

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return top_class(self.copy_votes(x).sum(dim=1))

    @torch.no_grad()
    def certify(self, x: Tensor, patch_sizes: int | Sequence[int]) -> Certificate:
        sizes = check_patch_sizes(patch_sizes, x.shape[2], x.shape[3])
        counts = self.copy_votes(x).sum(dim=1)  # (N, K)
        decision = top_class(counts)
        n_top = counts.gather(1, decision[:, None])[:, 0]
        rest = counts.scatter(1, decision[:, None], -1)
        runner = top_class(rest)  # the runner-up: most votes among the others, ties to the smaller index
        gap = n_top - rest.gather(1, runner[:, None])[:, 0]
        cols = []
        for p in sizes:
            twice = 2 * self.delta(p, x.shape[2], x.shape[3])
            cols.append((gap > twice) | ((gap == twice) & (decision < runner)))
        passes = torch.full_like(decision, self.passes(x.shape[2], x.shape[3]))
        return Certificate(decision, torch.stack(cols, dim=1), sizes, passes)

    @torch.no_grad()
    def weak_locations(self, x: Tensor, patch: int, count: int) -> Tensor:
        """The locations whose exact margin (:func:`~maskdefense.certify.base.location_margins`) is smallest."""
        votes = self.copy_votes(x)
        keep = self.copy_masks(x.shape[2], x.shape[3])
        margins = location_margins(votes, affected_copies(keep, patch), top_class(votes.sum(dim=1)))
        return weakest(margins, patch_locations((x.shape[2], x.shape[3]), patch), count)

    def config(self) -> dict[str, object]:
        return {"certifier": "ds", "mode": self.mode, "band": self.band, "threshold": self.threshold,
                "n_grad": self.n_grad,
                "fill": self.fill.tolist() if isinstance(self.fill, Tensor) else self.fill}
