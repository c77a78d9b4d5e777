"""A sparse feature masker trained in alternation with its classifier: SFM-Defense (Yu, Wang et al. 2022),
Section 4 (the masker's loss, Equations 2-5) and Section 5.2 (Algorithm 1).

The masker ``M`` maps an image ``x`` to a one-channel mask ``m`` in [0, 1]; the masked image is
``x~ = M(x) * x`` (every channel). Its loss, per image (Equations 2-5)::

    L_mask = w1 * L_sp + w2 * L_seg + w3 * L_recon
    L_sp    = ||x~||_1                          (sum over the C*H*W values)
    L_seg   = 1 - cos(F(x), F(x~))              (F: the classifier's logits)
    L_recon = ||x - x~||_2                      (square root of the sum over the C*H*W values)

averaged over the batch. ``F`` is taken as the classifier's logits: the paper says "the outputs of the target
model" and names no softmax.

Which images a norm covers (``norm_group``). Read per image (``norm_group=1``), the paper's weights make the masker
the identity: on CIFAR-10 in [0, 1] ``w1 * ||x||_1`` is ~3.7 (``w1 = 2.5e-3``) and ``||x||_2`` ~29, so masking
costs ~8x more reconstruction than it saves sparsity at any mask (the two terms alone are minimized by ``m = 1``,
and so is the semantic term); ``w1`` would have to be ~0.02 for the two to balance, and Section 6.2's "feasible
region" of ``w1`` around 2.5e-3 would not exist. Algorithm 1 writes the three terms for "a mini-batch" ``x``, and
norms of the whole mini-batch tensor (``torch.norm(x~, 1)``, ``torch.norm(x - x~)``) balance exactly there: over 64
CIFAR-10 images ``w1 * ||X||_1`` ~ 222 and ``||X||_2`` ~ 228 (32 images: 114 against 166; 128: 460 against 335).
Free per-pixel masks minimizing the two terms on 512 CIFAR-10 test images keep 100% of the L1 mass per image and
over groups of 32, 39% over groups of 64 (dark pixels dropped), 2% over groups of 128. With ``norm_group=G`` the L1
and L2 norms are taken over groups of ``G`` consecutive images of the batch (the last group may be smaller), summed
over the groups and divided by the number of images, so every term stays on a per-image scale (``L_sp`` is the same
for every ``G``; ``L_recon`` is ``sum_g ||X_g - X~_g||_2 / N``) and the semantic term, a batch mean of Eq. 4, keeps
its per-image weight against them (how the paper's code weighs it against mini-batch norms is not stated);
``G = 1`` is the per-image reading.

Algorithm 1, every epoch: a classifier phase (``x <- T(x)``, cross-entropy of ``F(x)``), then a masker phase
(``x <- T(x)``, ``x~ = M(x) * x``, ``L_mask`` with ``F`` frozen), ``T`` the image preprocessing of the
defense (bit-depth reduction, median filter, non-local means). At test time the pipeline is
``x -> x * M(x) -> T -> F`` (Section 5.3): Algorithm 1 trains the classifier on ``T(x)``, unmasked, and the
masker on preprocessed images, while at test time the classifier sees ``T(M(x) x)`` and the masker the raw
input. :class:`SparseMaskTask` runs Algorithm 1 as written (``classifier_input="preprocessed"``); with
``classifier_input="pipeline"`` the classifier phase trains on ``T(M(x) x)``, what the classifier sees at
test time (the masker phase is Algorithm 1's in both).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...models.masker import apply_masker
from ...ops.squeeze import Squeezer
from .alternating import AlternatingTask
from .base import Hook, describe, eval_batch_size

__all__ = ["sparse_mask_loss", "SparseMaskTask", "CLASSIFIER_INPUTS"]

#: What the classifier phase trains on: ``"preprocessed"`` -- ``T(x)`` (Algorithm 1); ``"pipeline"`` --
#: ``T(M(x) x)``, the test-time input.
CLASSIFIER_INPUTS = ("preprocessed", "pipeline")


def sparse_mask_loss(x: Tensor, x_masked: Tensor, out: Tensor, out_masked: Tensor,
                     weights: Sequence[float], norm_group: int = 1) -> tuple[Tensor, dict[str, Tensor]]:
    """``L_mask`` of Equation 2 (see the module docstring) for images ``x``, masked images ``x_masked``, and the
    classifier's outputs on both, the L1 and L2 norms over groups of ``norm_group`` images (1: per image), per
    image; returns the loss and its terms ``sparsity`` (Eq. 3), ``semantic`` (Eq. 4), ``reconstruction``
    (Eq. 5), per image, detached."""
    w1, w2, w3 = weights
    n = x.shape[0]
    x, x_masked = x.float().flatten(1), x_masked.float().flatten(1)
    diff = x - x_masked
    if norm_group > 1:  # the L2 norm of each group's values
        recon = torch.stack([torch.linalg.vector_norm(d) for d in diff.split(norm_group)]).sum()
    else:
        recon = torch.linalg.vector_norm(diff, dim=1).sum()
    terms = {"sparsity": x_masked.abs().sum(1).mean(),
             "semantic": (1 - F.cosine_similarity(out.float(), out_masked.float(), dim=1)).mean(),
             "reconstruction": recon / max(n, 1)}
    loss = w1 * terms["sparsity"] + w2 * terms["semantic"] + w3 * terms["reconstruction"]
    return loss, {k: v.detach() for k, v in terms.items()}


class SparseMaskTask(AlternatingTask):
    """Algorithm 1: ``classifier`` and ``masker`` (it returns the mask ``m``) trained in alternation, each
    epoch a classifier phase then a masker phase (see the module docstring).

    preprocess : the image preprocessing ``T`` (a :class:`~maskdefense.ops.squeeze.Squeezer`, applied without
        gradient, a randomized one drawing from the trainer's generator); ``None``: the identity.
    weights : ``(w1, w2, w3)`` of Equation 2.
    norm_group : images per L1 and L2 norm of the loss (1: per image; see the module docstring).
    classifier_input : one of :data:`CLASSIFIER_INPUTS`.

    Section 5.1's pre-training of the classifier is the classifier's initial weights (load them before).
    Metrics: ``classifier/loss``, ``classifier/accuracy``; ``masker/loss`` and its terms
    ``masker/sparsity``, ``masker/semantic``, ``masker/reconstruction``, and ``masker/mask_mean``.
    Validation on the test-time pipeline ``F(T(x * M(x)))``: ``accuracy``; ``mask_mean`` (mean of ``m``);
    ``kept`` (the fraction of the images' L1 mass the masking keeps, ``sum |x~| / sum |x|``).
    """

    name = "sparse-mask"

    def __init__(self, classifier: nn.Module, masker: nn.Module, *, weights: Sequence[float],
                 preprocess: Squeezer | None = None, classifier_input: str = "preprocessed", norm_group: int = 1,
                 hooks: Sequence[Hook] = ()) -> None:
        w = tuple(float(v) for v in weights)
        if len(w) != 3 or not all(math.isfinite(v) and v >= 0 for v in w):
            raise ValueError(f"weights must be three finite numbers >= 0 (w1, w2, w3), got {weights!r}")
        if classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        if isinstance(norm_group, bool) or not isinstance(norm_group, int) or norm_group < 1:
            raise ValueError(f"norm_group must be an int >= 1, got {norm_group!r}")
        super().__init__({"classifier": classifier, "masker": masker},
                         {"classifier": self._classifier_loss, "masker": self._masker_loss},
                         validate=self._validate, hooks=hooks)
        self.weights, self.preprocess, self.classifier_input = w, preprocess, classifier_input
        self.norm_group = norm_group

    @torch.no_grad()
    def preprocessed(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``T(x)``, without gradient."""
        return self.preprocess(x, generator) if self.preprocess is not None else x

    def _classifier_loss(self, nets: Mapping[str, nn.Module], x: Tensor, y: Tensor,
                         generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        if self.classifier_input == "pipeline":
            with torch.no_grad():
                x = apply_masker(nets["masker"], x)[0]
        logits = nets["classifier"](self.preprocessed(x, generator))
        return self.cross_entropy(logits, y), {"accuracy": (logits.detach().argmax(1) == y).float().mean()}

    def _masker_loss(self, nets: Mapping[str, nn.Module], x: Tensor, y: Tensor,
                     generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        f = nets["classifier"]
        x = self.preprocessed(x, generator)
        with torch.no_grad():
            out = f(x)
        x_masked, m = apply_masker(nets["masker"], x)
        loss, terms = sparse_mask_loss(x, x_masked, out, f(x_masked), self.weights, self.norm_group)
        return loss, {**terms, "mask_mean": m.detach().float().mean()}

    def _validate(self, nets: Mapping[str, nn.Module], val: tuple[Tensor, Tensor],
                  generator: torch.Generator) -> dict[str, float]:
        x, y = val
        bs = eval_batch_size(self)
        correct = mask = kept = 0.0
        for i in range(0, len(x), bs):
            xb = x[i : i + bs]
            x_masked, m = apply_masker(nets["masker"], xb)
            correct += float((nets["classifier"](self.preprocessed(x_masked, generator)).argmax(1) == y[i : i + bs]).sum())
            mask += float(m.double().sum()) / m[0].numel()
            kept += float(x_masked.double().abs().sum())
        n, mass = max(1, len(x)), max(float(x.double().abs().sum()), 1e-12)
        return {"accuracy": correct / n, "mask_mean": mask / n, "kept": kept / mass}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "weights": list(self.weights), "preprocess": describe(self.preprocess),
                "classifier_input": self.classifier_input, "norm_group": self.norm_group}
