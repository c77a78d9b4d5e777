"""REMIX: reform, mask, inpaint (Chen, Chen, Yu; poster, IEEE S&P 2019).

The input is reformed by a denoising autoencoder (optional), then, ``k`` times: its pixel positions are
partitioned at random into ``n`` sets (:func:`maskdefense.ops.partition.partition_masks`), ``n`` copies are
made with one set removed (black) in each, an inpainter restores every copy (one batched pass), and the
recombination ``x_hat = sum_i x_hat^i (1 - m^i)`` takes each pixel from the inpainting in which it was
removed. The base classifier labels the result.

In the shape of locuslab/smoothing's ``Smooth``:

* ``forward(x)``: the differentiable pipeline averaged over ``n_grad`` independent partitions (log of the
  mean softmax): what an adaptive attacker differentiates (EOT over the partitions);
* ``predict(x)``: the poster's decision, one random partition per image (``votes > 1``: a majority vote
  over that many partitions);
* :class:`REMIXDetector` adds the detection the poster proposes ("the distributional difference in
  x_hat^1..x_hat^n could be used to detect adversarial examples"): a score of the disagreement of the ``n``
  inpaintings, thresholded at a false-positive rate measured on clean validation images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ops.eot import log_mean_softmax
from ..ops.partition import mask_copies, partition_masks, recombine
from ..ops.threshold import threshold_at_fpr
from ..ops.vote import count_votes, top_class
from ..validation import check_images, positive_int
from .base import REJECT, Contract, Defense

__all__ = ["REMIX", "REMIXDetector", "SCORES"]

#: Disagreement scores of :class:`REMIXDetector`: ``"outputs"`` -- the generalized Jensen-Shannon divergence
#: of the classifier's softmax on the ``n`` inpaintings (entropy of the mean minus mean entropy); ``"pixels"``
#: -- the mean absolute difference between each inpainting and the image it inpainted (per pixel).
SCORES = ("outputs", "pixels")


class REMIX(Defense):
    """REMIX around a ``base`` classifier (see the module docstring).

    inpainter : image-to-image network trained on partition-masked clean images
        (:class:`~maskdefense.ops.partition.PartitionMask` with the same ``n``).
    n : masks per partition (poster: 2 on MNIST, 3 on CIFAR-10).
    k : mask-inpaint repetitions (poster: 1).
    reformer : optional denoising autoencoder applied first.
    n_grad : partitions averaged in :meth:`forward`.
    votes : partitions per decision in :meth:`predict` (poster: 1).
    chunk_size : input images per pass of the pipeline (bounds memory; never changes results).
    """

    def __init__(self, base: nn.Module, inpainter: nn.Module, *, n: int = 2, k: int = 1,
                 reformer: nn.Module | None = None, n_grad: int = 8, votes: int = 1, chunk_size: int = 256) -> None:
        super().__init__(base)
        self.inpainter = inpainter
        self.reformer = reformer
        self.n = positive_int(n, "n")
        if self.n < 2:
            raise ValueError("n must be >= 2: with one set every pixel would be removed")
        self.k = positive_int(k, "k")
        self.n_grad = positive_int(n_grad, "n_grad")
        self.votes = positive_int(votes, "votes")
        self.chunk_size = positive_int(chunk_size, "chunk_size")

    # -- the pipeline ----------------------------------------------------------------------------
    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The partitions of every round for the images ``x``: keep masks ``(k, N, n, 1, H, W)``."""
        m = partition_masks(self.k * x.shape[0], self.n, (x.shape[2], x.shape[3]), generator=generator,
                            device=x.device, dtype=x.dtype)
        return m.view(self.k, x.shape[0], *m.shape[1:])

    def purify(self, x: Tensor, generator: torch.Generator | None = None, *, masks: Tensor | None = None,
               return_parts: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor, Tensor]:
        """Reform (optional), then ``k`` rounds of mask-inpaint-recombine with the partitions ``masks``
        (default: :meth:`draw` from ``generator``); differentiable. With ``return_parts``: also the last
        round's input ``(N, C, H, W)``, inpaintings ``(N, n, C, H, W)`` and masks ``(N, n, 1, H, W)``."""
        masks = self.draw(x, generator) if masks is None else masks
        z = self.reformer(x) if self.reformer is not None else x
        src = inp = m = z
        for r in range(self.k):
            m = masks[r]
            copies = mask_copies(z, m)
            inp = self.inpainter(copies.flatten(0, 1)).view_as(copies)
            src, z = z, recombine(inp, m)
        return (z, src, inp, m) if return_parts else z

    def _check(self, x: object) -> Tensor:
        check_images(x.detach() if isinstance(x, Tensor) else x)
        assert isinstance(x, Tensor)
        return x

    def _repeat(self, x: Tensor, times: int) -> Tensor:
        return x.unsqueeze(1).expand(x.shape[0], times, *x.shape[1:]).reshape(-1, *x.shape[1:])

    def _chunks(self, x: Tensor, samples: int, generator: torch.Generator | None):
        """``(copies, masks)`` per chunk of at most ``chunk_size`` copies: ``samples`` copies of each image,
        copy ``j`` of image ``i`` at row ``i * samples + j``, with partitions drawn for all of them first (so
        results do not depend on ``chunk_size``)."""
        xr = self._repeat(x, samples)
        masks = self.draw(xr, generator)
        per = max(1, self.chunk_size // samples) * samples
        for i in range(0, xr.shape[0], per):
            yield xr[i : i + per], masks[:, i : i + per]

    def _logits(self, x: Tensor, samples: int, generator: torch.Generator | None) -> Tensor:
        """Base logits ``(N, samples, K)`` on ``samples`` independent purifications of each image."""
        outs = [self.base(self.purify(xc, masks=mc)) for xc, mc in self._chunks(x, samples, generator)]
        logits = torch.cat(outs)
        return logits.view(x.shape[0], samples, logits.shape[-1])

    # -- the defense -----------------------------------------------------------------------------
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Log of the mean softmax over ``n_grad`` independent partitions (fresh on every call)."""
        return log_mean_softmax(self._logits(self._check(x), self.n_grad, generator), dim=1)

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The decision: the base's class on one purification per image (``votes`` > 1: the most-voted
        class over that many independent purifications, ties to the smallest index)."""
        logits = self._logits(self._check(x), self.votes, generator)
        return top_class(count_votes(logits))

    def contract(self) -> Contract:
        comps = ("base", "inpainter") + (("reformer",) if self.reformer is not None else ())
        return Contract(randomized=True, samples_per_forward=self.n_grad, components=comps)

    def config(self) -> dict[str, Any]:
        return {"defense": "remix", "n": self.n, "k": self.k, "reformer": self.reformer is not None,
                "n_grad": self.n_grad, "votes": self.votes}


class REMIXDetector(REMIX):
    """REMIX that also rejects: ``detect`` scores the disagreement of the ``n`` inpaintings of the last
    round (``score``: one of :data:`SCORES`), averaged over the ``votes`` partitions of a decision; the
    defense rejects where the score exceeds ``threshold`` (set it with :meth:`calibrate` on clean validation
    images at a stated false-positive rate). ``predict`` classifies and scores the same partitions.
    """

    def __init__(self, base: nn.Module, inpainter: nn.Module, *, threshold: float, score: str = "outputs",
                 **kwargs: Any) -> None:
        super().__init__(base, inpainter, **kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.score = score
        self.threshold = float(threshold)
        self.fpr: float | None = None

    def _disagreement(self, src: Tensor, inp: Tensor) -> Tensor:
        if self.score == "pixels":
            return (inp - src.unsqueeze(1)).abs().flatten(2).mean(2).mean(1)
        logp = torch.log_softmax(self.base(inp.flatten(0, 1)), dim=-1).view(*inp.shape[:2], -1)
        p = logp.exp()
        mean = p.mean(1)
        entropy_of_mean = -(mean * torch.log(mean.clamp_min(1e-12))).sum(-1)
        mean_entropy = -(p * logp).sum(-1).mean(1)
        return (entropy_of_mean - mean_entropy).clamp_min(0.0)

    def _scores_and_logits(self, x: Tensor, samples: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        scores, logits = [], []
        for xc, mc in self._chunks(x, samples, generator):
            z, src, inp, _ = self.purify(xc, masks=mc, return_parts=True)
            scores.append(self._disagreement(src, inp).view(-1, samples).mean(1))
            out = self.base(z)
            logits.append(out.view(-1, samples, out.shape[-1]))
        return torch.cat(scores), torch.cat(logits)

    def detect(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Disagreement score per image, averaged over ``votes`` partitions; differentiable."""
        return self._scores_and_logits(self._check(x), self.votes, generator)[0]

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        scores, logits = self._scores_and_logits(self._check(x), self.votes, generator)
        pred = top_class(count_votes(logits))
        return torch.where(scores > self.threshold, torch.full_like(pred, REJECT), pred)

    @torch.no_grad()
    def calibrate(self, x_val: Tensor, fpr: float, *, generator: torch.Generator | None = None) -> float:
        """Set the threshold so that a fraction ``fpr`` of the clean validation images ``x_val`` is
        rejected (:func:`threshold_at_fpr` of their scores); returns it."""
        self.threshold = threshold_at_fpr(self.detect(x_val, generator=generator), fpr)
        self.fpr = float(fpr)
        return self.threshold

    def contract(self) -> Contract:
        c = super().contract()
        return Contract(randomized=True, samples_per_forward=c.samples_per_forward, components=c.components,
                        rejects=True, reject_threshold=self.threshold)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "defense": "remix-detector", "score": self.score, "threshold": self.threshold,
                "fpr": self.fpr}
