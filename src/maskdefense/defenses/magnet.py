"""MagNet: a two-pronged defense (Meng and Chen, CCS 2017): detectors reject inputs far from the manifold of
clean images, a reformer moves the rest onto it, the base classifier labels the reformed image.

Facts from the reference implementation (Trevillie/MagNet; the CIFAR-10 settings from the authors' later
code, as stated in the presets):

* a *reconstruction-error detector* scores ``mean over pixels |x - ae(x)|^p`` (``p = 2`` for MNIST's
  detector I, ``p = 1`` for detector II and CIFAR-10);
* a *Jensen-Shannon detector* scores ``JSD(softmax(f(ae(x)) / T), softmax(f(x) / T))`` with the classifier's
  logits ``f`` at temperature ``T`` (CIFAR-10: T = 10 and T = 40);
* every detector's threshold rejects a stated fraction of clean validation images (MNIST: 0.1% each);
  an input is rejected when *any* detector rejects it; detectors see the raw input, the classifier sees
  the reformed one.

Here the detectors are ``nn.Module`` s returning one differentiable score per image, and
:meth:`MagNet.detect` combines them as ``max_j (s_j / t_j) - 1`` (positive exactly when some detector
exceeds its threshold ``t_j``), so the defense is one detector with threshold 0 that an adaptive attacker can
differentiate (classifier and detectors together, as Carlini and Wagner attacked MagNet).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..ops.threshold import threshold_at_fpr
from ..validation import check_images
from .base import Contract, Defense

__all__ = ["ReconstructionError", "JensenShannon", "MagNet", "jensen_shannon"]


def jensen_shannon(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Jensen-Shannon divergence (natural log) between the rows of two log-probability tensors ``(N, K)``."""
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.log((0.5 * (p + q)).clamp_min(1e-30))
    return 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))


class ReconstructionError(nn.Module):
    """Score ``mean over (C, H, W) of |x - ae(x)|^p`` per image."""

    def __init__(self, autoencoder: nn.Module, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.autoencoder, self.p = autoencoder, p

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.autoencoder(x)).abs().pow(self.p).flatten(1).mean(1)

    def config(self) -> dict[str, Any]:
        return {"detector": "reconstruction", "p": self.p}


class JensenShannon(nn.Module):
    """Score ``JSD(softmax(f(ae(x)) / T), softmax(f(x) / T))`` per image, ``f`` the classifier's logits."""

    def __init__(self, autoencoder: nn.Module, classifier: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.autoencoder, self.temperature = autoencoder, float(temperature)
        self._classifier = [classifier]  # not a sub-module: the defense's base, saved once

    def forward(self, x: Tensor) -> Tensor:
        f = self._classifier[0]
        t = self.temperature
        return jensen_shannon(torch.log_softmax(f(self.autoencoder(x)) / t, -1), torch.log_softmax(f(x) / t, -1))

    def config(self) -> dict[str, Any]:
        return {"detector": "jensen-shannon", "temperature": self.temperature}


class MagNet(Defense):
    """MagNet around a ``base`` classifier: ``reformer`` (an autoencoder, or ``None``) and named
    ``detectors`` (score modules) with ``thresholds`` (name -> threshold; :meth:`calibrate` sets them).

    ``forward(x) = base(reformer(x))``; ``detect(x) = max_j (s_j(x) / t_j) - 1``; ``predict`` rejects where
    ``detect(x) > 0``. Deterministic. Without detectors it is the reformer alone (never rejects).
    """

    def __init__(self, base: nn.Module, reformer: nn.Module | None = None,
                 detectors: Mapping[str, nn.Module] | None = None,
                 thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(base)
        self.reformer = reformer
        self.detectors = nn.ModuleDict(dict(detectors or {}))
        self.thresholds: dict[str, float] = {}
        self.fpr: dict[str, float] = {}
        for name, t in (thresholds or {}).items():
            self.set_threshold(name, t)

    def set_threshold(self, name: str, threshold: float) -> None:
        if name not in self.detectors:
            raise ValueError(f"no detector named {name!r}; detectors: {sorted(self.detectors)}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"the threshold of detector {name!r} must be a positive number, got {threshold!r}")
        self.thresholds[name] = float(threshold)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(self.reformer(x) if self.reformer is not None else x)

    def scores(self, x: Tensor) -> dict[str, Tensor]:
        """Every detector's score ``(N,)`` on the raw input."""
        return {name: d(x) for name, d in self.detectors.items()}

    def detect(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        missing = [n for n in self.detectors if n not in self.thresholds]
        if missing:
            raise ValueError(f"detectors without a threshold: {missing}; call calibrate() first")
        ratios = [s / self.thresholds[n] for n, s in self.scores(x).items()]
        return torch.stack(ratios).max(0).values - 1.0

    @torch.no_grad()
    def calibrate(self, x_val: Tensor, fpr: float | Mapping[str, float], *, batch_size: int = 500) -> dict[str, float]:
        """Set each detector's threshold so that it alone rejects a fraction ``fpr`` (one rate for all, or
        name -> rate) of the clean validation images ``x_val``; returns the thresholds."""
        check_images(x_val)
        rates = {n: fpr[n] for n in self.detectors} if isinstance(fpr, Mapping) else {n: fpr for n in self.detectors}
        scores: dict[str, list[Tensor]] = {n: [] for n in self.detectors}
        for i in range(0, x_val.shape[0], batch_size):
            for n, s in self.scores(x_val[i : i + batch_size]).items():
                scores[n].append(s)
        for n, parts in scores.items():
            self.set_threshold(n, threshold_at_fpr(torch.cat(parts), rates[n]))
            self.fpr[n] = float(rates[n])
        return dict(self.thresholds)

    def contract(self) -> Contract:
        comps = ("base",) + (("reformer",) if self.reformer is not None else ())
        if len(self.detectors):
            return Contract(rejects=True, reject_threshold=0.0, components=comps + ("detectors",))
        return Contract(components=comps)

    def config(self) -> dict[str, Any]:
        return {"defense": "magnet", "reformer": self.reformer is not None,
                "detectors": {n: {**d.config(), "threshold": self.thresholds.get(n), "fpr": self.fpr.get(n)}
                              for n, d in self.detectors.items()}}
