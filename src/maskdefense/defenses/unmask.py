"""UNMASK (Freitas, Chen, Wang and Chau, IEEE Big Data 2020): detect and defend by the parts an image shows.

A part extractor ``K`` finds the set of parts in an image, a class-attribute matrix ``V`` (``K x P``, binary)
says which parts each class has, the classifier ``M`` labels the image. With ``JS`` the Jaccard similarity
(:mod:`maskdefense.ops.parts`):

* *detection* (Algorithm 1 of Xiong's thesis, Leiden 2021): ``d = 1 - JS(K(x), V[M(x)])``, the input is
  adversarial when ``d >= t`` (the thesis' prose, "if JS exceeds a certain threshold ... adversarial", has
  it backwards; the algorithm and the code agree). The reference code (safreita1/unmask, ``Extract.predict``) calls an image
  benign when ``JS > 0.3``, i.e. adversarial when ``d >= 0.7`` up to rounding: the default ``t``.
* *defense*: the class whose expected parts are *most* similar to the extracted ones. Algorithm 1 prints
  ``argmin``; the reference code (``Extract.search_for_closest_match``) keeps the maximum (strictly greater
  similarity replaces the best, so ties go to the first class, and an image whose parts match no class at all
  gets -1). We follow the code (``rule="max"``; ties to the lowest class index, no match -> ``ABSTAIN``);
  ``rule="min"`` is the algorithm as printed. The code's defense accuracy re-classifies *every* image by its
  parts (``M`` plays no part in it): ``mode="defend"``; ``mode="detect"`` keeps ``M``'s label and rejects.

Our ``K`` is a segmentation network (logits ``(N, 1 + P, H, W)``, channel 0 the background; the reference
uses a Mask R-CNN): a part is present when its predicted area is at least ``area_threshold`` of the image.
That set is a step function of the image. For an adaptive attacker the defense differentiates a *soft* set
(:func:`~maskdefense.ops.parts.soft_parts_present`, sigmoid of the soft area at ``temperature``) by BPDA:
``detect`` (and ``forward`` in defense mode) return exactly the hard values that ``predict`` decides by, with
the gradient of the soft ones (declared in the contract); :meth:`UNMASK.distance` and
:meth:`UNMASK.similarity` give either version.

Threshold convention: the thesis rejects when ``d >= t``, the library's contract when ``score > threshold``
(:mod:`maskdefense.ops.threshold`). Scores are float32; ``t`` is rounded to float32 and the contract states
the float32 number just below it, so both rules reject exactly the same scores.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..ops.bpda import bpda
from ..ops.parts import jaccard_distance, jaccard_similarity, parts_present, soft_parts_present
from ..ops.threshold import threshold_at_fpr
from ..validation import check_images
from .base import ABSTAIN, REJECT, Contract, Defense

__all__ = ["UNMASK", "match_class", "MODES", "RULES"]

MODES = ("detect", "defend")
RULES = ("max", "min")
_BPDA_STEP = "part presence (area threshold)"


def match_class(similarity: Tensor, rule: str = "max") -> Tensor:
    """``(N,)`` the class of ``similarity`` ``(N, K)`` chosen by ``rule``: ``"max"`` the most similar (ties to
    the lowest index; ``ABSTAIN`` where every similarity is 0), ``"min"`` the least similar."""
    if rule == "max":
        best = similarity.max(1)
        return torch.where(best.values > 0, best.indices, torch.full_like(best.indices, ABSTAIN))
    if rule == "min":
        return similarity.argmin(1)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _float32_step(t: float, up: bool) -> float:
    """The float32 number next to ``t`` (rounded to float32) upwards or downwards."""
    return float(np.nextafter(np.float32(t), np.float32(np.inf if up else -np.inf)))


class UNMASK(Defense):
    """UNMASK around ``base`` (``M``) with the part extractor ``extractor`` (``K``: images -> part logits
    ``(N, 1 + P, H, W)``) and the class-attribute matrix ``attributes`` ``(K, P)`` (a buffer; see
    :func:`~maskdefense.ops.parts.attribute_matrix`).

    mode : ``"detect"`` (``M``'s label, ``REJECT`` when ``d >= threshold``) or ``"defend"`` (the class chosen
        by ``rule`` from the part similarities).
    threshold : ``t`` of the rule ``d >= t`` (:meth:`calibrate` sets it at a false-positive rate).
    rule : ``"max"`` (the reference code) or ``"min"`` (Algorithm 1 as printed).
    area_threshold : a part is present when at least this fraction of the pixels shows it.
    temperature : of the soft part sets (gradients only; default a quarter of the default area threshold).
    """

    def __init__(self, base: nn.Module, extractor: nn.Module, attributes: Tensor, *, mode: str = "detect",
                 threshold: float = 0.7, rule: str = "max", area_threshold: float = 0.01,
                 temperature: float = 0.0025, classes: Sequence[str] | None = None,
                 parts: Sequence[str] | None = None) -> None:
        super().__init__(base)
        v = torch.as_tensor(attributes)
        if v.dim() != 2 or not bool(((v == 0) | (v == 1)).all()) or not bool(v.bool().any(1).all()):
            raise ValueError("attributes must be a binary (K, P) matrix with at least one part per class")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if not 0 < area_threshold <= 1 or not temperature > 0:
            raise ValueError(f"need 0 < area_threshold <= 1 and temperature > 0, got {area_threshold!r}, {temperature!r}")
        for names, n, what in ((classes, v.shape[0], "classes"), (parts, v.shape[1], "parts")):
            if names is not None and len(names) != n:
                raise ValueError(f"{len(names)} {what} named for {n} rows/columns of the attribute matrix")
        self.extractor = extractor
        self.register_buffer("attributes", v.float())
        self.mode, self.rule = mode, rule
        self.area_threshold, self.temperature = float(area_threshold), float(temperature)
        self.classes = tuple(classes) if classes is not None else None
        self.parts = tuple(parts) if parts is not None else None
        self.set_threshold(threshold)
        self.fpr: float | None = None

    def set_threshold(self, threshold: float) -> None:
        """Set ``t`` (the rule ``d >= t``), rounded to float32 like the scores."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        self.threshold = float(np.float32(threshold))

    # ---- part sets and scores ------------------------------------------------------------------------------

    def part_logits(self, x: Tensor) -> Tensor:
        """``K``'s per-pixel part logits ``(N, 1 + P, H, W)``."""
        z = self.extractor(x)
        if z.dim() != 4 or z.shape[0] != x.shape[0] or z.shape[1] != 1 + self.attributes.shape[1]:
            raise ValueError(f"the extractor must return (N, 1 + P, H, W) logits with P = "
                             f"{self.attributes.shape[1]}, got {tuple(z.shape)}")
        return z

    def _hard(self, z: Tensor) -> Tensor:
        return parts_present(z, self.area_threshold).double()

    def _soft(self, z: Tensor) -> Tensor:
        return soft_parts_present(z, self.area_threshold, self.temperature)

    def part_sets(self, x: Tensor, *, soft: bool = False) -> Tensor:
        """``(N, P)``: the parts ``K`` finds (hard: 0/1 in float64; soft: in (0, 1), differentiable)."""
        z = self.part_logits(x)
        return self._soft(z) if soft else self._hard(z)

    def similarity(self, x: Tensor, *, soft: bool = False) -> Tensor:
        """``(N, K)``: the Jaccard similarity of the extracted parts with every class's parts (float32)."""
        return jaccard_similarity(self.part_sets(x, soft=soft), self.attributes).float()

    def distance(self, x: Tensor, *, soft: bool = False) -> Tensor:
        """``(N,)``: ``d = 1 - JS(K(x), V[M(x)])`` with ``M(x)`` the classifier's arg-max (float32)."""
        return self._distance_to(x, self.base(x).argmax(1), soft)

    def _distance_to(self, x: Tensor, y: Tensor, soft: bool = False) -> Tensor:
        d = jaccard_distance(self.part_sets(x, soft=soft), self.attributes)
        return d.gather(1, y[:, None])[:, 0].float()

    def _hard_values_soft_gradient(self, x: Tensor, score: Any) -> Tensor:
        """``score(part sets)`` at the hard sets, with the gradient of the soft sets (BPDA)."""
        return bpda(lambda z: score(self._hard(z)).float(), self.part_logits(x), lambda z: score(self._soft(z)).float())

    def detect(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``d`` per image: the hard value, the soft gradient (see the module docstring)."""
        rows = self.base(x).argmax(1)[:, None].detach()
        return self._hard_values_soft_gradient(x, lambda s: jaccard_distance(s, self.attributes).gather(1, rows)[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        """Detection mode: ``M``'s logits. Defense mode: the part similarities of the classes (hard values,
        soft gradients), negated for ``rule="min"``, so that their arg-max is the defense's class."""
        if self.mode == "detect":
            return self.base(x)
        sign = 1.0 if self.rule == "max" else -1.0
        return self._hard_values_soft_gradient(x, lambda s: sign * jaccard_similarity(s, self.attributes))

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        check_images(x)
        if self.mode == "defend":
            return match_class(self.similarity(x), self.rule)
        pred = self.base(x).argmax(1)  # one classifier pass for the label and the distance
        return torch.where(self._distance_to(x, pred) >= self.threshold, torch.full_like(pred, REJECT), pred)

    @torch.no_grad()
    def calibrate(self, x_val: Tensor, fpr: float, *, batch_size: int = 500) -> float:
        """Set ``t`` so that ``d >= t`` rejects at most a fraction ``fpr`` of the clean images ``x_val``
        (``t`` is the float32 number just above :func:`threshold_at_fpr` of their distances); returns it."""
        check_images(x_val)
        d = torch.cat([self.distance(x_val[i : i + batch_size]) for i in range(0, x_val.shape[0], batch_size)])
        self.set_threshold(_float32_step(threshold_at_fpr(d, fpr), up=True))
        self.fpr = float(fpr)
        return self.threshold

    def contract(self) -> Contract:
        comps = ("base", "extractor")
        if self.mode == "defend":
            return Contract(bpda_steps=(_BPDA_STEP,), components=comps)
        return Contract(bpda_steps=(_BPDA_STEP,), rejects=True,
                        reject_threshold=_float32_step(self.threshold, up=False), components=comps)

    def config(self) -> dict[str, Any]:
        return {"defense": "unmask", "mode": self.mode, "rule": self.rule, "threshold": self.threshold,
                "fpr": self.fpr, "area_threshold": self.area_threshold, "temperature": self.temperature,
                "classes": list(self.classes) if self.classes else None,
                "parts": list(self.parts) if self.parts else None}
