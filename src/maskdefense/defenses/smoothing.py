"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019) and Denoised Smoothing (Salman, Sun, Yang,
Kapoor and Kolter, NeurIPS 2020): the smoothed classifier ``g(x) = argmax_c P(f(D(x + e)) = c)``,
``e ~ N(0, sigma^2 I)``, of a base classifier ``f`` behind an optional denoiser ``D`` (a DnCNN trained through the
frozen ``f``: :class:`~maskdefense.training.tasks.DenoiserTask`). Without a denoiser it is plain Gaussian
smoothing of a classifier trained under noise.

In the shape of locuslab/smoothing's ``Smooth``:

* ``forward(x)``: the differentiable surrogate an adaptive (EOT) attacker follows: the log of the mean softmax
  of ``f(D(x + e_j))`` over ``n_grad`` noise draws;
* ``predict(x)``: Cohen et al.'s PREDICT: ``n`` noisy copies vote; the defense abstains (``ABSTAIN``) unless
  the two-sided binomial test of the top class's votes against the runner-up's rejects at level ``alpha``
  (:func:`maskdefense.ops.vote.top_two_pvalue`);
* ``certify(x)``: Cohen et al.'s CERTIFY: the top class of ``n0`` selection samples, then a one-sided
  Clopper-Pearson lower bound ``pA`` (level ``alpha``) on its probability from ``n`` fresh samples; abstain when
  ``pA <= 1/2``, else the certified L2 radius ``sigma * Phi^-1(pA)`` (Theorem 1).

The noise is added unclipped (the images leave [0, 1]), as both papers do. Every method draws all noise for
all copies first, from ``generator`` (the global generator when ``None``), then runs the networks in chunks of
at most ``chunk_size`` images, so results do not depend on ``chunk_size``. The defense never changes the mode
of its networks: put it in ``eval()`` first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import beta, norm
from torch import Tensor, nn

from ..ops.eot import log_mean_softmax
from ..ops.vote import count_votes, top_class, top_two, top_two_pvalue
from ..seeding import normal
from ..validation import check_images, positive_int
from .base import ABSTAIN, Contract, Defense

__all__ = ["Smoothing", "clopper_pearson_lower", "predict_from_counts", "certify_from_counts"]


def clopper_pearson_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion from ``k``
    successes in ``n`` trials: the ``alpha`` quantile of Beta(k, n - k + 1) (0 where k = 0); what
    ``statsmodels.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` gives in Cohen et al.'s code."""
    k = np.asarray(k, dtype=np.float64)
    return np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)


def predict_from_counts(counts: Tensor, alpha: float) -> Tensor:
    """Cohen et al.'s PREDICT on vote counts ``(N, K)``: the top class, or ``ABSTAIN`` where the top-2 binomial
    test's p-value exceeds ``alpha``."""
    leader, n_a, n_b = top_two(counts)
    reject = torch.from_numpy(top_two_pvalue(n_a, n_b) > alpha).to(counts.device)
    return torch.where(reject, torch.full_like(leader, ABSTAIN), leader)


def certify_from_counts(selected: Tensor, counts: Tensor, sigma: float, alpha: float) -> tuple[Tensor, Tensor]:
    """Cohen et al.'s CERTIFY from the selected class per image ``(N,)`` (the top class of the selection
    samples) and the estimation vote counts ``(N, K)``: ``(prediction, radius)``, the prediction ``ABSTAIN``
    with radius 0 where the lower bound ``pA`` is at most 1/2, else radius ``sigma * Phi^-1(pA)``."""
    n = int(counts.sum(dim=1).max()) if counts.numel() else 0
    n_a = counts.gather(1, selected[:, None])[:, 0].cpu().numpy()
    p_a = clopper_pearson_lower(n_a, n, alpha)
    ok = p_a > 0.5
    radius = np.where(ok, sigma * norm.ppf(np.where(ok, p_a, 0.75)), 0.0)
    pred = torch.where(torch.from_numpy(ok).to(selected.device), selected, torch.full_like(selected, ABSTAIN))
    return pred, torch.from_numpy(radius).to(torch.float64)


class Smoothing(Defense):
    """A base classifier smoothed with Gaussian noise of standard deviation ``sigma``, behind ``denoiser`` (or
    ``None``). See the module docstring.

    n : noisy copies per decision in :meth:`predict` (Cohen et al.'s code: 100,000 for certification tables;
        their PREDICT experiments: 100). n0 : selection samples of :meth:`certify` (Cohen et al.: 100).
    alpha : the tests' level (Cohen et al.: 0.001). n_grad : noisy copies ``forward`` averages.
    chunk_size : images per network call (bounds memory; never changes results in eval mode).
    """

    def __init__(self, base: nn.Module, sigma: float, *, denoiser: nn.Module | None = None, n: int = 100,
                 n0: int = 100, alpha: float = 0.001, n_grad: int = 8, chunk_size: int = 1000) -> None:
        super().__init__(base)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
        self.denoiser = denoiser
        self.sigma, self.alpha = float(sigma), float(alpha)
        self.n, self.n0 = positive_int(n, "n"), positive_int(n0, "n0")
        self.n_grad, self.chunk_size = positive_int(n_grad, "n_grad"), positive_int(chunk_size, "chunk_size")

    def _copy_logits(self, x: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
        """Logits ``(N, m, K)`` of ``f(D(x_i + e_ij))`` for ``m`` noise draws per image (copy ``j`` of image ``i``
        is row ``i * m + j`` of the noise), differentiable w.r.t. ``x`` unless under no_grad."""
        noise = normal((x.shape[0] * m, *x.shape[1:]), generator, x.device).to(x.dtype) * self.sigma
        outs = []
        for start in range(0, noise.shape[0], self.chunk_size):
            idx = torch.arange(start, min(start + self.chunk_size, noise.shape[0]), device=x.device)
            z = x[idx // m] + noise[idx]
            outs.append(self.base(self.denoiser(z) if self.denoiser is not None else z))
        logits = torch.cat(outs)
        return logits.view(x.shape[0], m, logits.shape[-1])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Log of the mean softmax over ``n_grad`` noise draws (fresh on every call)."""
        check_images(x.detach())
        return log_mean_softmax(self._copy_logits(x, self.n_grad, generator), dim=1)

    @torch.no_grad()
    def vote_counts(self, x: Tensor, n: int | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Votes per class ``(N, K)`` of ``n`` (default ``self.n``) noisy copies of each image."""
        check_images(x)
        return count_votes(self._copy_logits(x, self.n if n is None else positive_int(n, "n"), generator))

    @torch.no_grad()
    def predict(self, x: Tensor, n: int | None = None, *, generator: torch.Generator | None = None,
                alpha: float | None = None) -> Tensor:
        """Cohen et al.'s PREDICT (:func:`predict_from_counts`) on ``n`` noisy copies; -1 = abstain."""
        return predict_from_counts(self.vote_counts(x, n, generator=generator), self.alpha if alpha is None else alpha)

    @torch.no_grad()
    def certify(self, x: Tensor, n0: int | None = None, n: int | None = None, *,
                generator: torch.Generator | None = None, alpha: float | None = None) -> tuple[Tensor, Tensor]:
        """Cohen et al.'s CERTIFY: ``(prediction, certified L2 radius)`` per image (:func:`certify_from_counts`);
        the selection draws its ``n0`` samples before the estimation's ``n``."""
        selected = top_class(self.vote_counts(x, self.n0 if n0 is None else n0, generator=generator))
        counts = self.vote_counts(x, n, generator=generator)
        return certify_from_counts(selected, counts, self.sigma, self.alpha if alpha is None else alpha)

    def contract(self) -> Contract:
        """Randomized (fresh noise on every call), ``n_grad`` samples per forward, differentiable end to end;
        abstaining is not rejecting."""
        comps = ("base",) + (("denoiser",) if self.denoiser is not None else ())
        return Contract(randomized=True, samples_per_forward=self.n_grad, components=comps)

    def config(self) -> dict[str, Any]:
        return {"defense": "smoothing", "sigma": self.sigma, "denoiser": self.denoiser is not None, "n": self.n,
                "n0": self.n0, "alpha": self.alpha, "n_grad": self.n_grad}
