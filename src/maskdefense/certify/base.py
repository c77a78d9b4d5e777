"""Certified patch robustness: the certifier interface, its per-batch result, and the counting shared by
the vote certifiers.

Threat model (all certifiers): the adversary replaces every pixel of one ``p x p`` square anywhere inside
the image by arbitrary values in ``[0, 1]``. A certifier, shaped like locuslab/smoothing's ``Smooth``,
classifies masked copies of the input with a base classifier and decides from them:

* ``predict(x)``: the decision (``ABSTAIN`` = -1 allowed), deterministic: the masks are enumerated, not
  drawn;
* ``certify(x, patch_sizes)``: a :class:`Certificate` -- the same decision and, per patch size, whether it
  is *proved* that no patch of that size changes it (certified accuracy = certified and correct);
* ``forward(x)``: a differentiable surrogate of the vote (the log of the mean softmax over the masked
  copies), what an adaptive patch attack differentiates (:mod:`maskdefense.attacks.patch`);
* ``weak_locations(x, patch, count)``: the patch locations the certificate finds weakest, where an
  empirical attack starts.

The masked copies of a chunk of images run through the base classifier as one batch
(:meth:`Certifier.masked_logits`). Removed pixels take a constant fill (:func:`check_constant_fill`): a
masked copy must depend on its kept pixels only, or no certificate holds.

Counting shared by the vote certifiers (:func:`location_margins`): copy ``m`` is *affected* by a patch at
location ``l`` when it keeps at least one pixel of the patch; an unaffected copy sees exactly the clean
image's masked copy, so its vote is fixed, and an affected copy may vote for anything. With ``u_k(l)`` the
votes for class ``k`` among the unaffected copies and ``A(l)`` the number of affected copies, the patched
vote for the decision ``y`` is at least ``u_y(l)`` and for ``k`` at most ``u_k(l) + A(l)``, both reached by
an adversary who moves every affected vote to ``k``. With ties going to the smaller class, the decision
survives every patch at ``l`` iff ``u_y(l) - u_k(l) - A(l) - [k < y] >= 0`` for every ``k != y`` -- the
*margin* at ``l``; a patch size is certified iff the margin is ``>= 0`` at every location. This is exact
for an adversary who controls the affected copies' votes, and it holds for multi-class votes too (a
copy that votes for several classes adds at most one vote to ``k``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..defenses.base import Defense
from ..ops.ablation import check_constant_fill, patch_locations, patch_mask
from ..ops.eot import log_mean_softmax
from ..validation import InputError, check_images, positive_int

__all__ = ["Certificate", "Certifier", "location_margins", "affected_copies", "check_patch_sizes"]


@dataclass
class Certificate:
    """The certification of a batch of ``N`` images.

    decision : ``(N,)`` long, the certifier's decision (``ABSTAIN`` = -1 allowed), equal to ``predict``.
    certified : ``(N, P)`` bool, column ``j``: no ``patch_sizes[j]`` patch anywhere changes the decision.
    patch_sizes : the patch sides, in the order of the columns.
    passes : ``(N,)`` long, masked copies run through the base classifier per image.
    """

    decision: Tensor
    certified: Tensor
    patch_sizes: tuple[int, ...]
    passes: Tensor

    def at(self, patch: int) -> Tensor:
        """``(N,)`` bool: certified against ``patch x patch`` patches."""
        if patch not in self.patch_sizes:
            raise KeyError(f"patch size {patch} was not certified (sizes: {list(self.patch_sizes)})")
        return self.certified[:, self.patch_sizes.index(patch)]

    def records(self) -> list[dict[str, Any]]:
        """Per image: ``{"decision", "certified": {"<p>": bool}, "passes"}`` (JSON-able)."""
        return [{"decision": int(d), "passes": int(n),
                 "certified": {str(p): bool(c[j]) for j, p in enumerate(self.patch_sizes)}}
                for d, c, n in zip(self.decision.tolist(), self.certified, self.passes.tolist())]


def check_patch_sizes(sizes: int | Sequence[int], h: int, w: int) -> tuple[int, ...]:
    """Patch sides as a tuple, each an int in ``[1, min(H, W)]``."""
    items = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if not items:
        raise ValueError("no patch size given")
    for p in items:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= min(h, w):
            raise ValueError(f"patch size must be an int in [1, {min(h, w)}] for {h}x{w} images, got {p!r}")
    return items


def affected_copies(keep: Tensor, patch: int, locations: Tensor | None = None) -> Tensor:
    """``(L, M)`` bool: copy ``m`` (keep mask ``keep[m]``, ``(M, 1, H, W)``) keeps a pixel of the
    ``patch x patch`` patch at location ``l`` (all locations, :func:`patch_locations` order, by default)."""
    h, w = keep.shape[-2:]
    locs = patch_locations((h, w), patch) if locations is None else locations
    pm = patch_mask((h, w), patch, locs).flatten(1)  # (L, HW)
    return (pm @ (keep.flatten(1) > 0).float().T) > 0


def location_margins(votes: Tensor, affected: Tensor, decision: Tensor) -> Tensor:
    """``(N, L)`` long: the margin of the decision at each location (module docstring): ``min over k != y``
    of ``u_y - u_k - A - [k < y]``; the decision survives every patch at ``l`` iff the margin is ``>= 0``.

    votes : ``(N, M, K)`` 0/1, the votes of each copy of each image (several classes allowed);
    affected : ``(L, M)`` bool (:func:`affected_copies`); decision : ``(N,)`` long, the vote's winner.
    """
    v = votes.to(torch.float64)
    free = (~affected).to(torch.float64)  # (L, M)
    u = torch.einsum("lm,nmk->nlk", free, v)  # unaffected votes per class
    a = affected.sum(dim=1).to(torch.float64)  # (L,)
    n, _, k = votes.shape
    cls = torch.arange(k, device=votes.device)
    d = decision.clamp_min(0)
    u_y = u.gather(2, d.view(n, 1, 1).expand(n, u.shape[1], 1))  # (N, L, 1)
    slack = u_y - u - a.view(1, -1, 1) - (cls.view(1, 1, k) < d.view(n, 1, 1)).to(torch.float64)
    slack = slack.masked_fill((cls.view(1, 1, k) == d.view(n, 1, 1)), float("inf"))
    return slack.min(dim=2).values.round().long()


class Certifier(Defense):
    """Base class of the certifiers (see the module docstring). Subclasses implement :meth:`copy_masks`
    (the keep masks of the copies the surrogate averages), :meth:`predict`, :meth:`certify`,
    :meth:`passes` and :meth:`config`; :meth:`weak_locations` defaults to locations spread evenly.

    base : the classifier, ``[0, 1]`` images ``(N, C, H, W)`` -> logits; fill : the constant value of removed
    pixels (``"black"``, a number, a per-channel tensor); n_grad : copies the surrogate averages (spread
    evenly over :meth:`copy_masks`; ``None``: all of them); chunk_size : images per call of ``base`` (bounds
    memory; results do not depend on it in eval mode).
    """

    def __init__(self, base: nn.Module, *, fill: object = "black", n_grad: int | None = None,
                 chunk_size: int = 2048) -> None:
        super().__init__(base)
        self.fill = check_constant_fill(fill)
        self.n_grad = None if n_grad is None else positive_int(n_grad, "n_grad")
        self.chunk_size = positive_int(chunk_size, "chunk_size")

    # ---- the masked copies, batched

    def _check(self, x: object) -> Tensor:
        check_images(x.detach() if isinstance(x, Tensor) else x)
        assert isinstance(x, Tensor)
        return x

    def _fill_for(self, x: Tensor) -> float | Tensor:
        return self.fill.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1) if isinstance(self.fill, Tensor) \
            else self.fill

    def masked_logits(self, x: Tensor, keep: Tensor, image: Tensor | None = None) -> Tensor:
        """Base logits of masked copies. Without ``image``: every image of ``x`` under every keep mask of
        ``keep`` ``(M, 1, H, W)`` -> ``(N, M, K)``. With ``image`` ``(T,)``: copy ``t`` is image ``image[t]``
        under ``keep[t]`` -> ``(T, K)``. Runs ``chunk_size`` copies per call; differentiable w.r.t. ``x``."""
        keep = keep.to(device=x.device, dtype=x.dtype)
        n, m = x.shape[0], keep.shape[0]
        if image is None:
            total = n * m
            img = lambda a, b: torch.arange(a, b, device=x.device) // m  # noqa: E731
            msk = lambda a, b: torch.arange(a, b, device=x.device) % m  # noqa: E731
        else:
            total = int(image.shape[0])
            img = lambda a, b: image[a:b].to(x.device)  # noqa: E731
            msk = lambda a, b: torch.arange(a, b, device=x.device)  # noqa: E731
        if total == 0:
            raise InputError("no masked copies to classify")
        fill = self._fill_for(x)
        outs = []
        for s in range(0, total, self.chunk_size):
            e = min(s + self.chunk_size, total)
            km = keep[msk(s, e)]
            outs.append(self.base(x[img(s, e)] * km + fill * (1 - km)))
        logits = torch.cat(outs)
        return logits if image is not None else logits.view(n, m, -1)

    # ---- interface

    def copy_masks(self, h: int, w: int) -> Tensor:
        """Keep masks ``(M, 1, H, W)`` of the single-mask copies the decision is built from."""
        raise NotImplementedError

    def surrogate_masks(self, h: int, w: int) -> Tensor:
        """The copies :meth:`forward` averages: all of :meth:`copy_masks`, or ``n_grad`` spread evenly."""
        keep = self.copy_masks(h, w)
        if self.n_grad is None or self.n_grad >= keep.shape[0]:
            return keep
        return keep[torch.linspace(0, keep.shape[0] - 1, self.n_grad).round().long()]

    def forward(self, x: Tensor) -> Tensor:
        """Differentiable surrogate of the vote: ``log(mean_m softmax(f(copy_m)))`` ``(N, K)``."""
        x = self._check(x)
        return log_mean_softmax(self.masked_logits(x, self.surrogate_masks(x.shape[2], x.shape[3])), dim=1)

    def certify(self, x: Tensor, patch_sizes: int | Sequence[int]) -> Certificate:
        raise NotImplementedError

    def passes(self, h: int, w: int) -> int:
        """Masked copies :meth:`certify` runs per ``h x w`` image (the floor of its cost)."""
        raise NotImplementedError

    @torch.no_grad()
    def weak_locations(self, x: Tensor, patch: int, count: int) -> Tensor:
        """``(N, count, 2)`` patch locations to attack first; here: spread evenly over all locations."""
        locs = patch_locations((x.shape[2], x.shape[3]), patch)
        idx = torch.linspace(0, locs.shape[0] - 1, min(count, locs.shape[0])).round().long()
        return locs[idx].unsqueeze(0).expand(x.shape[0], -1, -1).clone()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "certifier")


def weakest(margins: Tensor, locations: Tensor, count: int) -> Tensor:
    """``(N, count, 2)``: the locations of the ``count`` smallest margins per image. Ties go in a fixed
    pseudo-random order (seed 0): a certified image often ties at every location (PatchCleanser's
    unanimous map, a band margin equal down a whole column), and the first ones in row-major order would
    put every attacked patch in the image's top rows."""
    n_loc = margins.shape[1]
    k = min(count, n_loc)
    order = torch.randperm(n_loc, generator=torch.Generator().manual_seed(0)).to(margins.device)
    idx = torch.sort(margins[:, order], dim=1, stable=True).indices[:, :k]
    return locations[order.to(locations.device)[idx.to(locations.device)]]
