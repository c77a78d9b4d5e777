"""MAD: mask-based adversarial defense (Xu, Zhang, Zhao, Fang; Algorithms 2022).

The defended classifier masks ``n`` random copies of the input with grid masks
(:mod:`maskdefense.ops.masking`; 1 = kept, 0 = removed) and returns the most-voted class of the base
model over the copies (5 votes in the journal version, 20 in the conference version). The base model
is expected to have been trained on masked images (:class:`maskdefense.ops.masking.GridMask`).

Three entry points, in the spirit of locuslab/smoothing's ``Smooth``:

* ``forward(x)``: a differentiable surrogate for attacks (log of the mean softmax over ``n_grad``
  masked copies) -- a valid log-probability vector;
* ``predict(x, n)``: the paper's decision (hard majority vote), optionally abstaining;
* ``predict_adaptive(x, n_max)``: the same vote, drawn in rounds and stopped early per input, either
  only when the outcome is settled (``stop="exact"``) or when a sequential binomial test decides
  (``stop="test"``).

Random draws: every method draws all cell masks for all copies first (from ``generator``), then runs
the network in chunks of at most ``chunk_size`` images, so results do not depend on ``chunk_size``.
Copy ``j`` of image ``i`` uses mask row ``i * n + j`` of ``grid_mask(N * n, ...)``; ``predict`` and
``predict_adaptive`` with the same generator state use the same masks.

Train/eval: the defense never changes the base model's mode. Put it in ``eval()`` before predicting
(in train mode BatchNorm uses batch statistics, so results would depend on the batch and chunking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import betabinom
from torch import Tensor, nn

from ..ops.masking import Fill, _check_cell, _check_fill, _check_rate, _fill_config, apply_mask, grid_mask, upsample_mask
from ..validation import InputError, check_images, positive_int
from ..ops.eot import log_mean_softmax
from ..ops.vote import count_votes, top_class, top_two, top_two_pvalue
from ..seeding import uniform
from .base import ABSTAIN, Contract, Defense

__all__ = ["MADClassifier", "AdaptiveVote", "top_class", "flip_probability", "STOP_BUDGET", "STOP_EXACT",
           "STOP_TEST", "STOP_PREDICTIVE"]

#: ``AdaptiveVote.stopped`` codes: the vote budget ran out / the leader could no longer be overtaken /
#: the sequential test decided.
STOP_BUDGET, STOP_EXACT, STOP_TEST = 0, 1, 2
#: ``AdaptiveVote.stopped`` code of ``stop="predictive"``.
STOP_PREDICTIVE = 3


def flip_probability(leader_votes: np.ndarray, other_votes: np.ndarray, remaining: int) -> np.ndarray:
    """Posterior predictive probability that the remaining votes overturn the current leader.

    Every vote not for the leader is counted for one single challenger (which can only overstate the
    challenger: the true runner-up has at most these votes). The challenger's share ``q`` of future votes
    gets a uniform prior, so after ``a`` leader and ``b`` other votes ``q ~ Beta(b + 1, a + 1)`` and the
    challenger's share ``K`` of the ``remaining`` votes is beta-binomial. The leader is overturned (or
    tied, which we count as overturned) when ``b + K >= a + remaining - K``.
    """
    a = np.asarray(leader_votes, dtype=np.float64)
    b = np.asarray(other_votes, dtype=np.float64)
    k_star = np.ceil((a + remaining - b) / 2.0)  # smallest K with b + K >= a + remaining - K
    return np.where(k_star > remaining, 0.0, betabinom.sf(k_star - 1, remaining, b + 1, a + 1))


@dataclass
class AdaptiveVote:
    """Result of :meth:`MADClassifier.predict_adaptive`.

    predictions : ``(N,)`` long, the decided class (ties -> smallest index, as in ``predict``).
    counts : ``(N, K)`` long, votes drawn per class (sums to ``passes``).
    passes : ``(N,)`` long, masked copies run through the network per input (<= ``n_max``).
    stopped : ``(N,)`` long, why the input stopped: ``STOP_BUDGET`` (all ``n_max`` votes used; the
        decision is the full vote), ``STOP_EXACT`` (decision provably equals the full ``n_max`` vote with
        the same masks) or ``STOP_TEST`` (the sequential test decided; may rarely differ from the full
        vote -- compare with ``predict(x, n_max, generator=<same seed>)`` to measure how often).
    """

    predictions: Tensor
    counts: Tensor
    passes: Tensor
    stopped: Tensor


class MADClassifier(Defense):
    """A base classifier defended by MAD's random grid masking and majority vote.

    Parameters
    ----------
    base : ``nn.Module`` mapping ``[0, 1]`` images ``(N, C, H, W)`` to logits ``(N, K)``.
    cell : test-time cell side in pixels (must divide the image sides); paper: 4 on 32x32 CIFAR-10
        (8 at training time), 7 on 28x28 MNIST.
    rate : probability that a cell is removed (paper: 0.75).
    n : votes per decision in :meth:`predict` (journal version: 5; conference version: 20).
    n_grad : masked copies averaged in :meth:`forward` (the differentiable surrogate).
    fill : ``"black"`` (paper), ``"mean"``, ``"noise"``, a float or a tensor; see :func:`apply_mask`.
    exact : remove exactly ``round(rate * cells)`` cells per copy instead of Bernoulli(rate) per cell.
    chunk_size : maximum number of images per call of the base network (bounds memory; never changes
        results when the base is in eval mode).
    surrogate : ``"softmax"``: ``forward`` returns ``log(mean_j softmax(f(tau(x, c_j))))``;
        ``"logits"``: ``log_softmax(mean_j f(tau(x, c_j)))``. Both are log-probabilities.
    abstain_threshold : default for :meth:`predict`: abstain (``ABSTAIN`` = -1) when the top class gets
        fewer than ``threshold * n`` votes. ``None``: never abstain.
    """

    def __init__(
        self,
        base: nn.Module,
        cell: int,
        rate: float,
        *,
        n: int = 5,
        n_grad: int = 8,
        fill: Fill = "black",
        exact: bool = False,
        chunk_size: int = 4096,
        surrogate: str = "softmax",
        abstain_threshold: float | None = None,
    ) -> None:
        super().__init__(base)
        self.cell = _check_cell(cell)
        self.rate = _check_rate(rate)
        self.n = positive_int(n, "n")
        self.n_grad = positive_int(n_grad, "n_grad")
        self.fill = _check_fill(fill)
        self.exact = bool(exact)
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        if surrogate not in ("softmax", "logits"):
            raise ValueError(f"surrogate must be 'softmax' or 'logits', got {surrogate!r}")
        self.surrogate = surrogate
        self.abstain_threshold = _check_threshold(abstain_threshold)

    # ------------------------------------------------------------------------------------------
    # internals

    def _check(self, x: object) -> Tensor:
        check_images(x.detach() if isinstance(x, Tensor) else x)  # detach: no autograd warning on min/max
        assert isinstance(x, Tensor)
        h, w = x.shape[2], x.shape[3]
        if h % self.cell or w % self.cell:
            raise InputError(f"cell {self.cell} does not divide image side {h if h % self.cell else w} "
                             f"(images are {h}x{w})")
        return x

    def _draw_masks(self, x: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """Cell masks ``(N, n, gh, gw)`` for ``n`` copies of each image (row-major copy layout)."""
        size = (x.shape[2], x.shape[3])
        cm = grid_mask(x.shape[0] * n, size, self.cell, self.rate, generator=generator, exact=self.exact,
                       device=x.device)
        return cm.view(x.shape[0], n, *cm.shape[1:])

    def _fixed_masks(self, x: Tensor, masks: Tensor) -> Tensor:
        """Validate user masks: ``(M, gh, gw)`` shared by all images or ``(N, M, gh, gw)``."""
        gh, gw = x.shape[2] // self.cell, x.shape[3] // self.cell
        if not isinstance(masks, Tensor) or masks.dim() not in (3, 4) or tuple(masks.shape[-2:]) != (gh, gw) \
                or (masks.dim() == 4 and masks.shape[0] != x.shape[0]) or masks.shape[-3] == 0:
            raise InputError(f"masks must be cell masks of shape (M, {gh}, {gw}) or ({x.shape[0]}, M, {gh}, {gw}) "
                             f"with M >= 1, got "
                             + (str(tuple(masks.shape)) if isinstance(masks, Tensor) else type(masks).__name__))
        if masks.dtype != torch.bool:
            if not bool(((masks == 0) | (masks == 1)).all()):
                raise InputError("masks must be boolean or contain only 0 (removed) and 1 (kept)")
            masks = masks != 0
        masks = masks.to(x.device)
        if masks.dim() == 3:
            masks = masks.unsqueeze(0).expand(x.shape[0], *masks.shape)
        return masks

    def _copy_logits(self, x: Tensor, masks: Tensor, generator: torch.Generator | None) -> Tensor:
        """Base logits ``(N, M, K)`` on ``x[i]`` masked with ``masks[i, j]`` (``masks``: ``(N, M, gh, gw)``).

        Draws the ``"noise"`` fill for all copies at once (after the masks), then evaluates the network
        in chunks of ``chunk_size`` images. Differentiable w.r.t. ``x`` unless called under no_grad.
        """
        n_img, m = masks.shape[:2]
        total = n_img * m
        flat = masks.reshape(total, *masks.shape[2:])
        noise = None
        if isinstance(self.fill, str) and self.fill == "noise":
            noise = uniform((total, *x.shape[1:]), generator, x.device).to(x.dtype)
        outs: list[Tensor] = []
        for start in range(0, total, self.chunk_size):
            stop = min(start + self.chunk_size, total)
            img = torch.arange(start, stop, device=x.device) // m
            pix = upsample_mask(flat[start:stop], self.cell, dtype=x.dtype)
            fill = noise[start:stop] if noise is not None else self.fill
            outs.append(self.base(apply_mask(x[img], pix, fill)))
        if not outs:
            raise InputError("no images to classify")
        logits = torch.cat(outs)
        return logits.view(n_img, m, logits.shape[-1])

    # ------------------------------------------------------------------------------------------
    # public API

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Differentiable surrogate: log-probabilities ``(N, K)`` averaged over ``n_grad`` masked copies.

        ``surrogate="softmax"``: ``logsumexp_j log_softmax(f(tau(x, c_j))) - log(n_grad)`` (the log of the
        mean softmax, computed stably); ``"logits"``: ``log_softmax`` of the mean logits. Fresh masks
        are drawn on every call (from ``generator`` if given): this is the function EOT attacks
        differentiate.
        """
        x = self._check(x)
        logits = self._copy_logits(x, self._draw_masks(x, self.n_grad, generator), generator)
        if self.surrogate == "logits":
            return torch.log_softmax(logits.mean(dim=1), dim=1)
        return log_mean_softmax(logits, dim=1)

    @torch.no_grad()
    def vote_counts(self, x: Tensor, n: int | None = None, *, generator: torch.Generator | None = None,
                    masks: Tensor | None = None) -> Tensor:
        """Votes per class ``(N, K)`` (long): argmax of the base on ``n`` masked copies of each image.

        ``masks`` (optional): fixed cell masks, ``(M, gh, gw)`` shared by all images or ``(N, M, gh, gw)``
        (1/True = kept), used instead of random ones (``n`` is then ignored); for ablations and
        exhaustive evaluation with :func:`maskdefense.ops.masking.enumerate_masks`.
        """
        x = self._check(x)
        if masks is not None:
            cm = self._fixed_masks(x, masks)
        else:
            cm = self._draw_masks(x, self.n if n is None else positive_int(n, "n"), generator)
        return count_votes(self._copy_logits(x, cm, generator))

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        n: int | None = None,
        *,
        generator: torch.Generator | None = None,
        return_counts: bool = False,
        abstain_threshold: float | None = None,
        masks: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """MAD's decision: the most-voted class over ``n`` (default ``self.n``) masked copies.

        Ties go to the smallest class index (:func:`top_class`). With an abstain threshold ``t``
        (argument, else ``self.abstain_threshold``) the result is ``ABSTAIN`` (-1) where
        ``top_votes / n < t``. Returns the predictions ``(N,)``, and the vote counts ``(N, K)`` too when
        ``return_counts``. ``masks``: fixed cell masks instead of random ones, see :meth:`vote_counts`.
        """
        counts = self.vote_counts(x, n, generator=generator, masks=masks)
        pred = top_class(counts)
        t = _check_threshold(abstain_threshold) if abstain_threshold is not None else self.abstain_threshold
        if t is not None:
            total = counts.sum(dim=1)
            top = counts.gather(1, pred[:, None])[:, 0]
            pred = torch.where(top < t * total, torch.full_like(pred, ABSTAIN), pred)
        return (pred, counts) if return_counts else pred

    @torch.no_grad()
    def predict_adaptive(
        self,
        x: Tensor,
        n_max: int,
        *,
        generator: torch.Generator | None = None,
        batch: int = 8,
        stop: str = "exact",
        alpha: float = 0.001,
        delta: float = 0.001,
    ) -> AdaptiveVote:
        """The ``n_max``-vote decision with per-input early stopping; votes are drawn ``batch`` at a time.

        All ``N * n_max`` cell masks are drawn up front exactly as ``predict(x, n_max)`` draws them, and
        round ``r`` evaluates copies ``[r * batch, (r + 1) * batch)`` of the inputs still undecided.
        An input stops when

        * ``stop="exact"`` (and also in ``"test"`` mode): no class can overtake the leader with the
          remaining ``n_max - used`` votes, counting the tie-break (leader ``L`` beats ``j`` if
          ``c_L - c_j > remaining``, or ``== remaining`` and ``L < j``). The decision is then *identical*
          to the full ``n_max`` vote with the same masks (for ``fill="noise"`` the noise is drawn per
          round, so equality holds for the masks but not the noise values).
        * ``stop="test"``: additionally, a two-sided binomial test of the leader's votes among the
          leader + runner-up votes against p = 1/2 (the top-2 test of Hung & Fithian 2019 used by
          locuslab/smoothing's ``predict``) rejects at level ``alpha / R``, with ``R = ceil(n_max /
          batch)`` the number of rounds (Bonferroni over the repeated looks). With probability at
          least ``1 - alpha`` per input, a test-stopped decision is the class most likely to win a
          single masked vote (the infinite-vote majority); it can differ from the finite ``n_max`` vote.

        * ``stop="predictive"``: additionally (to the exact rule), stop when the posterior predictive
          probability that the remaining votes overturn the leader is below ``delta``
          (:func:`flip_probability`: a conservative beta-binomial model with a uniform prior). This targets
          agreement with the full ``n_max`` vote directly; it can differ from it, with a probability per
          input that the rule keeps near ``delta`` -- measure it against ``predict(x, n_max)``.

        Returns an :class:`AdaptiveVote` (predictions, counts, passes per input, stop reason).
        """
        x = self._check(x)
        n_max = positive_int(n_max, "n_max")
        batch = positive_int(batch, "batch")
        if stop not in ("exact", "test", "predictive"):
            raise ValueError(f"stop must be 'exact', 'test' or 'predictive', got {stop!r}")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        n_img = x.shape[0]
        masks = self._draw_masks(x, n_max, generator)
        rounds = math.ceil(n_max / batch)
        level = alpha / rounds
        counts: Tensor | None = None
        passes = torch.zeros(n_img, dtype=torch.long, device=x.device)
        stopped = torch.full((n_img,), STOP_BUDGET, dtype=torch.long, device=x.device)
        active = torch.arange(n_img, device=x.device)
        for r in range(rounds):
            if active.numel() == 0:
                break
            lo, hi = r * batch, min((r + 1) * batch, n_max)
            votes = count_votes(self._copy_logits(x[active], masks[active, lo:hi], generator))
            if counts is None:
                counts = torch.zeros(n_img, votes.shape[1], dtype=torch.long, device=x.device)
            counts[active] += votes
            passes[active] = hi
            remaining = n_max - hi
            if remaining == 0:
                break
            c = counts[active]
            leader = top_class(c)
            c_lead = c.gather(1, leader[:, None])
            margin = c_lead - c - remaining  # (A, K)
            cls = torch.arange(c.shape[1], device=x.device)[None, :]
            safe = (margin > 0) | ((margin == 0) & (leader[:, None] < cls)) | (cls == leader[:, None])
            done_exact = safe.all(dim=1)
            done = done_exact.clone()
            if stop == "test":
                _, n_a, n_b = top_two(c)
                p = top_two_pvalue(n_a, n_b)
                done_test = torch.from_numpy(p < level).to(x.device) & ~done_exact
                stopped[active[done_test]] = STOP_TEST
                done |= done_test
            if stop == "predictive":
                a = c_lead[:, 0].cpu().numpy()
                b = c.sum(dim=1).cpu().numpy() - a
                done_pred = torch.from_numpy(flip_probability(a, b, remaining) < delta).to(x.device) & ~done_exact
                stopped[active[done_pred]] = STOP_PREDICTIVE
                done |= done_pred
            stopped[active[done_exact]] = STOP_EXACT
            active = active[~done]
        assert counts is not None
        return AdaptiveVote(top_class(counts), counts, passes, stopped)

    def contract(self) -> Contract:
        """Randomized (fresh masks on every call); ``forward`` averages ``n_grad`` masked copies and is
        differentiable (the masking is a multiplication); never rejects (an abstention is not a
        detection); one component, the base classifier."""
        return Contract(randomized=True, samples_per_forward=self.n_grad, components=("base",))

    def config(self) -> dict[str, object]:
        return {
            "defense": "mad", "cell": self.cell, "rate": self.rate, "n": self.n, "n_grad": self.n_grad,
            "fill": _fill_config(self.fill), "exact": self.exact, "surrogate": self.surrogate,
            "abstain_threshold": self.abstain_threshold,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "defense")


def _check_threshold(t: object) -> float | None:
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"abstain_threshold must be in [0, 1] or None, got {t!r}")
    return float(t)
