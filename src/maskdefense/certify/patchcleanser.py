"""PatchCleanser (Xiang, Mahloujifar, Mittal: "PatchCleanser: Certifiably Robust Defense against
Adversarial Patches for Any Image Classifier", USENIX Security 2022) for any classifier of the library.

Mask set: :func:`~maskdefense.ops.ablation.covering_masks` (``k`` masks per axis, the stride and mask side
derived from the patch size; every ``p x p`` patch lies inside some mask). A mask removes its square; a
*two-mask* copy removes the squares of two masks (the union; ``i = j`` is the one-mask copy).

Double masking (the paper's Algorithm 1; the reference's ``double_masking``), per image, from the
one-mask predictions ``y_i``:

* Case I: all ``y_i`` agree -> that label;
* else the majority label ``y_maj`` (most frequent ``y_i``; ties to the smaller class, our rule: the
  reference takes an unstable argsort's last entry), and the *disagreer* masks ``i`` with ``y_i != y_maj``
  in index order; Case II: the first disagreer ``i`` whose two-mask predictions ``y_ij`` equal ``y_i`` for
  every ``j`` -> ``y_i``;
* Case III: no disagreer passes -> ``y_maj``.

Certificate (the paper's Theorem 1; the reference's ``certify_precomputed``): if every two-mask prediction
``y_ij`` (all ``i <= j``) equals one label ``y``, no patch of the mask set's patch size, or smaller, changes
the decision ``y``: the mask covering the patch gives ``y`` with every other mask on the patched image too,
so no disagreer with another label passes Case II, and if the majority changed, that mask passes it. The
certified label is the decision, so certified accuracy counts images whose label it is. Certifying costs
``M (M + 1) / 2`` two-mask copies (``M = k^2``); :meth:`PatchCleanser.predict` runs the one-mask copies and
only the rows of the disagreers.

Removed pixels take a constant ``fill`` (black by default; the reference sets removed pixels to 0 after
normalization, i.e. the data set's mean colour).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..ops.ablation import CoveringSet, covering_masks, patch_locations
from ..ops.vote import top_class
from .base import Certificate, Certifier, check_patch_sizes, weakest

__all__ = ["PatchCleanser", "double_masking"]


def double_masking(pairs: Tensor) -> int:
    """The double-masking decision of one image from its two-mask predictions ``pairs`` ``(M, M)`` (long;
    the diagonal holds the one-mask predictions; only the rows of disagreers are read off the diagonal,
    so other rows may hold anything, e.g. -1 when not computed). See the module docstring."""
    one = pairs.diagonal()
    if bool((one == one[0]).all()):
        return int(one[0])  # Case I
    majority = int(top_class(torch.bincount(one).unsqueeze(0))[0])
    for i in torch.nonzero(one != majority).flatten().tolist():
        if bool((pairs[i] == one[i]).all()):
            return int(one[i])  # Case II
    return majority  # Case III


class PatchCleanser(Certifier):
    """PatchCleanser's double masking and certificate (see the module docstring).

    patch : the patch side the mask set is built for (it certifies this size and smaller ones); k : masks
    per axis (the paper: 6), or stride : the mask stride instead.
    """

    def __init__(self, base: nn.Module, *, patch: int, k: int | None = 6, stride: int | None = None,
                 fill: object = "black", n_grad: int | None = None, chunk_size: int = 2048) -> None:
        super().__init__(base, fill=fill, n_grad=n_grad, chunk_size=chunk_size)
        if stride is not None:
            k = None
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be an int >= 1, got {patch!r}")
        self.patch, self.k, self.stride = patch, k, stride
        covering_masks(max(patch, 1) + 1, patch, k=k, stride=stride)  # checks k / stride now

    def mask_set(self, h: int, w: int) -> CoveringSet:
        return covering_masks((h, w), self.patch, k=self.k, stride=self.stride)

    def copy_masks(self, h: int, w: int) -> Tensor:
        """The one-mask copies (what the surrogate of the vote averages)."""
        return self.mask_set(h, w).masks

    def passes(self, h: int, w: int) -> int:
        m = self.mask_set(h, w).masks.shape[0]
        return m * (m + 1) // 2

    @torch.no_grad()
    def _pair_predictions(self, x: Tensor, image: Tensor, i: Tensor, j: Tensor, keep: Tensor) -> Tensor:
        """Predictions on image ``image[t]`` with masks ``i[t]`` and ``j[t]`` both applied."""
        return self.masked_logits(x, keep[i] * keep[j], image).argmax(dim=1)

    @torch.no_grad()
    def pair_predictions(self, x: Tensor) -> Tensor:
        """``(N, M, M)`` long: every two-mask prediction (symmetric; the diagonal: one-mask predictions)."""
        x = self._check(x)
        keep = self.copy_masks(x.shape[2], x.shape[3])
        n, m = x.shape[0], keep.shape[0]
        iu = torch.triu_indices(m, m)
        t = iu.shape[1]
        image = torch.arange(n).repeat_interleave(t)
        pred = self._pair_predictions(x, image, iu[0].repeat(n), iu[1].repeat(n), keep).view(n, t).cpu()
        out = torch.empty(n, m, m, dtype=torch.long)
        out[:, iu[0], iu[1]] = pred
        out[:, iu[1], iu[0]] = pred
        return out

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Double masking with the second round only where needed: the one-mask copies of every image,
        then the two-mask rows of the disagreer masks of the images whose one-mask predictions disagree."""
        x = self._check(x)
        keep = self.copy_masks(x.shape[2], x.shape[3])
        n, m = x.shape[0], keep.shape[0]
        one = self.masked_logits(x, keep).argmax(dim=2).cpu()  # (N, M)
        majority = _majority(one)
        rows = [(b, i) for b in range(n) for i in torch.nonzero(one[b] != majority[b]).flatten().tolist()]
        pairs = torch.full((n, m, m), -1, dtype=torch.long)
        pairs[:, torch.arange(m), torch.arange(m)] = one
        if rows:
            b_idx = torch.tensor([b for b, _ in rows]).repeat_interleave(m)
            i_idx = torch.tensor([i for _, i in rows]).repeat_interleave(m)
            j_idx = torch.arange(m).repeat(len(rows))
            pred = self._pair_predictions(x, b_idx, i_idx, j_idx, keep).cpu()
            pairs[b_idx, i_idx, j_idx] = pred
        return torch.tensor([double_masking(pairs[b]) for b in range(n)], dtype=torch.long, device=x.device)

    @torch.no_grad()
    def certify(self, x: Tensor, patch_sizes: int | Sequence[int]) -> Certificate:
        sizes = check_patch_sizes(patch_sizes, x.shape[2], x.shape[3])
        pairs = self.pair_predictions(x)
        decision = torch.tensor([double_masking(p) for p in pairs], dtype=torch.long)
        agree = (pairs == decision.view(-1, 1, 1)).flatten(1).all(dim=1)
        certified = torch.stack([agree & (p <= self.patch) for p in sizes], dim=1)
        passes = torch.full_like(decision, self.passes(x.shape[2], x.shape[3]))
        return Certificate(decision.to(x.device), certified.to(x.device), sizes, passes.to(x.device))

    @torch.no_grad()
    def weak_locations(self, x: Tensor, patch: int, count: int) -> Tensor:
        """Locations ranked by how many two-mask predictions of the masks covering them differ from the
        decision (the masks an attacker there cannot touch: the more of their rows disagree, the weaker)."""
        h, w = x.shape[2], x.shape[3]
        pairs = self.pair_predictions(x)
        decision = torch.tensor([double_masking(p) for p in pairs], dtype=torch.long)
        wrong_rows = (pairs != decision.view(-1, 1, 1)).sum(dim=2).float()  # (N, M)
        covers = self.mask_set(h, w).covers(patch, (h, w)).float()  # (L, M); none for a larger patch
        score = -(wrong_rows @ covers.T)  # (N, L): more disagreeing rows -> smaller
        return weakest(score, patch_locations((h, w), patch), count)

    def config(self) -> dict[str, object]:
        return {"certifier": "pc", "patch": self.patch, "k": self.k, "stride": self.stride, "n_grad": self.n_grad,
                "fill": self.fill.tolist() if isinstance(self.fill, Tensor) else self.fill}


def _majority(pred: Tensor) -> Tensor:
    """Majority label per row of ``pred`` ``(N, M)`` (ties to the smaller class)."""
    k = int(pred.max()) + 1
    counts = torch.zeros(pred.shape[0], k, dtype=torch.long).scatter_add_(1, pred, torch.ones_like(pred))
    return top_class(counts)
