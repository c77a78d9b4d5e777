"""Image preprocessors ("squeezers"): bit-depth reduction, median filter, non-local means (feature squeezing,
Xu, Evans, Qi, NDSS 2018) and total-variation minimization over randomly kept pixels (TVM; Guo, Rana,
Cisse, van der Maaten, ICLR 2018).

The interface every squeezer has (what a defense composes; create one with :func:`create_squeezer`):

>>> sq = create_squeezer("median", size=2)        # also "bits", "nlmeans", "tvm"; list_squeezers()
>>> z = sq(x)                  # forward(x, generator=None): the actual transform, (N, C, H, W) in [0, 1] ->
...                            # same shape, float32, no gradient (every squeezer is non-differentiable)
>>> z = sq.bpda(x, generator=g)  # the same values; backward = identity (BPDA, maskdefense.ops.bpda), so an
...                              # adaptive attacker can differentiate a pipeline that contains the squeezer
>>> sq.randomized, sq.non_differentiable, sq.name, sq.config()   # True only for "tvm"; always True; ...

A randomized squeezer (TVM) draws from ``generator`` (a ``torch.Generator``); the others ignore it.
:func:`create_squeezers` builds a chain from ``"bits+median"`` and routes keyword parameters to the squeezers
whose constructor takes them (the defense spec syntax).

Image quilting, Guo et al.'s other transformation, is left out: it replaces every patch of the input by its
nearest neighbour in a database of patches from clean training images (Guo et al. index one million 5x5
patches with faiss and stitch them along minimum-error seams). That needs a large per-dataset patch index
built from clean data and a nearest-neighbour search for every patch of every image, in every EOT sample of
every attack step, far beyond the CPU budget of these experiments; a reduced database would no longer be
the published defense, so it is not offered at all.
"""

from __future__ import annotations

import abc
import inspect
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from ..registry import Registry
from ..seeding import uniform
from ..validation import InputError, check_images
from .bpda import bpda

__all__ = ["Squeezer", "BitDepth", "Median", "NLMeans", "TVM", "tv_reconstruct", "tv_objective", "SQUEEZERS",
           "create_squeezer", "create_squeezers", "list_squeezers"]


def _int(v: object, name: str, lo: int, hi: int | None = None, odd: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi) or (odd and v % 2 == 0):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an{' odd' if odd else ''} int {rng}, got {v!r}")
    return v


def _number(v: object, name: str, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= hi
    if not ok or (v <= lo if lo_open else v < lo):  # type: ignore[operator]
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v!r}")
    return float(v)  # type: ignore[arg-type]


class Squeezer(nn.Module, abc.ABC):
    """Base class: an image-to-image transform of ``[0, 1]`` images ``(N, C, H, W)`` (see the module docstring).

    Subclasses set ``name`` and ``randomized`` and implement :meth:`squeeze` (called on validated, detached
    input under ``no_grad``) and :meth:`config`."""

    name: ClassVar[str]
    randomized: ClassVar[bool] = False
    #: No useful gradient (rounding, order statistics, OpenCV, an iterative solver): use :meth:`bpda`.
    non_differentiable: ClassVar[bool] = True

    @abc.abstractmethod
    def squeeze(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The transform of valid images ``x``."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON description: ``{"squeezer": name, <parameters>}``."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The actual transform (no gradient flows through it); ``generator`` feeds a randomized squeezer."""
        check_images(x.detach() if isinstance(x, Tensor) else x, name=f"{self.name} input")
        with torch.no_grad():
            return self.squeeze(x.detach(), generator)

    def bpda(self, x: Tensor, generator: torch.Generator | None = None,
             approx: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``forward(x, generator)`` in the forward pass; in the backward pass the identity (default) or the
        gradient of the differentiable ``approx`` (:func:`maskdefense.ops.bpda.bpda`)."""
        return bpda(lambda t: self(t, generator), x, approx)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "squeezer")


class BitDepth(Squeezer):
    """Reduce every channel to ``bits`` bits: ``round(x * (2^bits - 1)) / (2^bits - 1)`` (Xu et al.; their code
    ``reduce_precision_py`` rounds with ``np.rint``, half to even, as ``torch.round`` does). The
    SFM-Defense paper's text (Section 5.3) garbles the formula ("multiply by 2^(i-1), subtract 1, ..., divide
    by 2^(i-1)"); Xu et al.'s is the one used. Xu et al.: 1 bit on MNIST, 5 bits on CIFAR-10 and ImageNet."""

    name = "bits"

    def __init__(self, bits: int = 5) -> None:
        super().__init__()
        self.bits = _int(bits, "bits", 1, 8)

    def squeeze(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels

    def config(self) -> dict[str, Any]:
        return {"squeezer": self.name, "bits": self.bits}


class Median(Squeezer):
    """Median filter over a ``size x size`` window, per image and channel: ``scipy.ndimage.median_filter`` with
    ``size=(1, 1, size, size)`` and ``mode="reflect"``, exactly Xu et al.'s code (``median_filter_py``).

    For an even size the convention is scipy's: the window of pixel ``(i, j)`` covers rows ``i - size//2 ..
    i - size//2 + size - 1`` (for 2x2: rows ``i-1, i`` and columns ``j-1, j``) and the median is the element of
    rank ``size*size // 2`` in sorted order (for 2x2: the larger of the two middle values), with the border
    reflected (``d c b a | a b c d``). Xu et al.: 2x2 on MNIST, CIFAR-10 and ImageNet (3x3 also evaluated)."""

    name = "median"

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = _int(size, "size", 1)

    def squeeze(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        out = ndimage.median_filter(x.cpu().numpy(), size=(1, 1, self.size, self.size), mode="reflect")
        return torch.from_numpy(out).to(x.device)

    def config(self) -> dict[str, Any]:
        return {"squeezer": self.name, "size": self.size}


class NLMeans(Squeezer):
    """OpenCV's fast non-local means on 8-bit images, as Xu et al. (``non_local_means_color_py``): each image
    is rounded to uint8 (``clip(rint(255 x))``), denoised, and divided by 255.

    Xu et al. write a setting "a-b-c": search window ``a x a``, patch ``b x b``, filter strength ``c``; their
    code passes it to OpenCV as ``fastNlMeansDenoisingColored(img, None, h=c, hColor=c,
    templateWindowSize=b, searchWindowSize=a)`` (``fastNlMeansDenoising(img, None, h=c, b, a)`` for one
    channel). Here ``search=a``, ``patch=b``, ``h=c`` (used for both ``h`` and ``hColor``). Defaults 11-3-4:
    the setting Xu et al. evaluate on CIFAR-10 and use in their ImageNet detector; their joint CIFAR-10
    detector uses 13-3-2 (``search=13, h=2``). A colour image is passed to OpenCV in BGR order, the order its
    Lab conversion assumes (Xu et al.'s code passes RGB unchanged).

    Cost: ~3 ms per 32x32 colour image on one core. Images go to OpenCV from a pool of ``workers`` threads
    (OpenCV releases the GIL; default ``torch.get_num_threads()``); OpenCV's own thread count is left as it
    is (on 256 CIFAR-sized images, 1 or 2 OpenCV threads made no measurable difference, and it is a
    process-wide setting). On the shared 2-core machine, already loaded, the pool of 2 took 0.72-0.92 s
    against 0.81-0.99 s serially: within noise, as the process got about one core either way.
    """

    name = "nlmeans"

    def __init__(self, h: float = 4.0, search: int = 11, patch: int = 3, workers: int | None = None) -> None:
        super().__init__()
        self.h = _number(h, "h", 0.0)
        self.search = _int(search, "search", 1, odd=True)
        self.patch = _int(patch, "patch", 1, odd=True)
        self.workers = None if workers is None else _int(workers, "workers", 1)

    def _denoise(self, img: np.ndarray) -> np.ndarray:
        import cv2

        if img.ndim == 3:
            return cv2.fastNlMeansDenoisingColored(img, None, self.h, self.h, self.patch, self.search)
        return cv2.fastNlMeansDenoising(img, None, self.h, self.patch, self.search)

    def squeeze(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if x.shape[1] not in (1, 3):
            raise InputError(f"nlmeans needs 1 or 3 channels, got shape {tuple(x.shape)}")
        u8 = np.clip(np.rint(x.cpu().numpy() * 255), 0, 255).astype(np.uint8)
        imgs = [np.ascontiguousarray(im[::-1].transpose(1, 2, 0)) if im.shape[0] == 3 else im[0] for im in u8]
        workers = min(self.workers or torch.get_num_threads(), len(imgs))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                outs = list(pool.map(self._denoise, imgs))
        else:
            outs = [self._denoise(im) for im in imgs]
        out = np.stack([o.transpose(2, 0, 1)[::-1] if o.ndim == 3 else o[None] for o in outs]) if outs else u8
        return torch.from_numpy(out.astype(np.float32) / 255).to(x.device)

    def config(self) -> dict[str, Any]:  # workers never changes the result
        return {"squeezer": self.name, "h": self.h, "search": self.search, "patch": self.patch}


# -- total-variation minimization --------------------------------------------------------------------------
#: Step sizes of the primal-dual iteration: the diagonal preconditioning of Pock and Chambolle (ICCV 2011) for
#: the forward-difference gradient (each pixel enters at most 4 differences, each difference has 2 pixels).
_TAU, _SIGMA = 0.25, 0.5
#: Images per block of the solver (fits the cache: ~5x faster than one pass over thousands of images).
_BLOCK = 64


def _check_keep(x: Tensor, keep: Tensor) -> None:
    check_images(x)
    if not isinstance(keep, Tensor) or keep.dim() != 4 or keep.shape[1] not in (1, x.shape[1]) \
            or keep.shape[0] != x.shape[0] or keep.shape[2:] != x.shape[2:]:
        raise InputError(f"keep mask must have shape (N, 1 or C, H, W) matching images {tuple(x.shape)}, got "
                         f"{tuple(keep.shape) if isinstance(keep, Tensor) else type(keep).__name__}")
    if keep.numel() and not bool(((keep == 0) | (keep == 1)).all()):
        raise InputError("keep mask must hold only 0 (dropped) and 1 (kept)")


def _gradient(z: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along W and H, zero on the last column / row."""
    return F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1)), F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))


def tv_objective(z: Tensor, x: Tensor, keep: Tensor, weight: float) -> Tensor:
    """``0.5 * sum(keep * (z - x)^2) + weight * TV(z)`` per image ``(N,)``, ``TV`` the isotropic total
    variation of each channel (forward differences): the objective :func:`tv_reconstruct` minimizes."""
    dx, dy = _gradient(z)
    fit = (keep * (z - x) ** 2).flatten(1).sum(1)
    return 0.5 * fit + weight * torch.sqrt(dx**2 + dy**2).flatten(1).sum(1)


def _start(x: Tensor, m: Tensor) -> Tensor:
    """Kept pixels as they are; a dropped pixel at the mean of the kept pixels of its 3x3 neighbourhood (else
    of its image channel). The minimizer is flat along some directions at dropped pixels, so with a fixed
    number of iterations the start matters: from this one ~100 iterations reach the objective within 0.1%."""
    kept = m.expand_as(x)
    num, den = F.avg_pool2d(kept * x, 3, 1, 1), F.avg_pool2d(kept, 3, 1, 1)
    mean = (kept * x).sum((2, 3), keepdim=True) / kept.sum((2, 3), keepdim=True).clamp_min(1)
    return torch.where(kept > 0, x, torch.where(den > 0, num / den.clamp_min(1e-12), mean))


def _primal_dual(x: Tensor, m: Tensor, weight: float, iters: int) -> Tensor:
    z = _start(x, m)
    zbar = z.clone()
    px, py = torch.zeros_like(x), torch.zeros_like(x)  # dual variable; stays 0 on the last column / row
    fit, norm = _TAU * m * x, 1 / (1 + _TAU * m)
    for _ in range(iters):
        px[..., :, :-1].add_(zbar[..., :, 1:] - zbar[..., :, :-1], alpha=_SIGMA)
        py[..., :-1, :].add_(zbar[..., 1:, :] - zbar[..., :-1, :], alpha=_SIGMA)
        scale = torch.sqrt(px * px + py * py).div_(weight).clamp_min_(1)  # project onto |p| <= weight
        px.div_(scale)
        py.div_(scale)
        div = px + py  # divergence = -gradient^T p
        div[..., :, 1:].sub_(px[..., :, :-1])
        div[..., 1:, :].sub_(py[..., :-1, :])
        new = z.add(div, alpha=_TAU).add_(fit).mul_(norm)  # prox of the masked data term
        torch.sub(2 * new, z, out=zbar)
        z = new
    return z.clamp_(0, 1)


def tv_reconstruct(x: Tensor, keep: Tensor, weight: float, iters: int = 100) -> Tensor:
    """The image closest to ``x`` on its kept pixels with small total variation:
    ``argmin_z 0.5 * ||keep * (z - x)||^2 + weight * TV(z)`` (:func:`tv_objective`), per image and channel.

    keep : ``(N, 1 or C, H, W)``, 1 = pixel kept, 0 = dropped (its value in ``x`` is never used).

    Solved by the primal-dual algorithm of Chambolle and Pock (2011, Algorithm 1), batched in torch, for a
    fixed number of ``iters`` (so an image's result does not depend on the batch it is in), the result
    clipped to ``[0, 1]`` (the minimizer lies there; clipping never raises the objective). Why our own solver:
    scikit-image's ``denoise_tv_chambolle`` and ``denoise_tv_bregman`` solve the unmasked problem only (Guo et
    al. patched scikit-image's Cython split-Bregman solver to add the mask, ``_tv_bregman.patch`` in their
    repository); ``scipy.optimize.minimize`` needs a smooth objective and runs one image channel at a time
    from Python (Guo et al.'s slower ``tvl2`` option); cvxpy is not installed and would be slower still;
    MONAI has total variation as a loss, not as a solver. With ``keep`` all ones this is the ROF problem that
    ``denoise_tv_chambolle(x, weight)`` solves (the tests compare the two)."""
    _check_keep(x, keep)
    weight = _number(weight, "weight", 0.0)
    iters = _int(iters, "iters", 1)
    m = keep.to(x.dtype)
    blocks = [_primal_dual(x[i : i + _BLOCK], m[i : i + _BLOCK], weight, iters) for i in range(0, x.shape[0], _BLOCK)]
    return torch.cat(blocks) if blocks else x.clone()


class TVM(Squeezer):
    """Total-variation minimization (Guo et al.): keep each pixel with probability ``keep``
    (drawn from ``generator``), then reconstruct the image from the kept pixels (:func:`tv_reconstruct` with
    ``weight``). Randomized: every call draws a new set of pixels.

    Guo et al. write ``min_z ||(1 - X) * (z - x)||_2 + lambda * TV_p(z)`` with ``X(i, j, k) = 1`` for a kept
    pixel; the ``(1 - X)`` contradicts "kept when X = 1", and their code (``reconstruct`` with the default
    split-Bregman solver) fits the *kept* pixels with the squared norm and the isotropic TV of each channel,
    skimage's ``weight = 1 / lambda``: i.e. ``min_z 0.5 ||X * (z - x)||^2 + lambda TV(z)``, solved here.
    Defaults are their code's: ``keep = 1 - PIXEL_DROP_RATE = 0.5``, ``weight = TVM_WEIGHT = 0.03``.

    per_channel : ``False`` (default) -- one draw per pixel, shared by its channels (this package's mask
        convention); ``True`` -- an independent draw per pixel and channel, Guo et al.'s ``X(i, j, k)`` (their
        code drops channels independently).
    iters : primal-dual iterations (100 reach the objective within ~0.1% on 32x32 images).
    """

    name = "tvm"
    randomized = True

    def __init__(self, keep: float = 0.5, weight: float = 0.03, iters: int = 100, per_channel: bool = False) -> None:
        super().__init__()
        self.keep = _number(keep, "keep", 0.0, 1.0)
        self.weight = _number(weight, "weight", 0.0)
        self.iters = _int(iters, "iters", 1)
        if not isinstance(per_channel, bool):
            raise ValueError(f"per_channel must be true or false, got {per_channel!r}")
        self.per_channel = per_channel

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Keep mask for the images ``x``: ``(N, 1, H, W)`` (``(N, C, H, W)`` per channel), 1 = kept."""
        n, c, h, w = x.shape
        return (uniform((n, c if self.per_channel else 1, h, w), generator, x.device) < self.keep).to(x.dtype)

    def squeeze(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return tv_reconstruct(x, self.draw(x, generator), self.weight, self.iters)

    def config(self) -> dict[str, Any]:
        return {"squeezer": self.name, "keep": self.keep, "weight": self.weight, "iters": self.iters,
                "per_channel": self.per_channel}


# -- registry ------------------------------------------------------------------------------------------------
SQUEEZERS: Registry[Squeezer] = Registry("squeezer")
SQUEEZERS.add("bits", BitDepth, "bit-depth reduction (bits=5)")
SQUEEZERS.add("median", Median, "median filter, scipy's convention for even sizes (size=2)")
SQUEEZERS.add("nlmeans", NLMeans, "OpenCV fast non-local means on uint8 (h=4, search=11, patch=3)")
SQUEEZERS.add("tvm", TVM, "random pixel dropout + total-variation reconstruction (keep=0.5, weight=0.03)")


def create_squeezer(name: str, **kwargs: Any) -> Squeezer:
    """``create_squeezer("bits", bits=5)``: one squeezer by registered name."""
    return SQUEEZERS.create(name, **kwargs)


def list_squeezers(pattern: str = "*") -> list[str]:
    return SQUEEZERS.list(pattern)


def create_squeezers(names: str, **params: Any) -> list[Squeezer]:
    """A chain, applied in order: ``create_squeezers("bits+median", bits=5, size=2)``. Each parameter goes to
    every squeezer of the chain whose constructor takes it; one that none takes is a ``ValueError``."""
    if not isinstance(names, str) or not names.strip():
        raise ValueError(f"squeezer names must be a non-empty string like 'bits+median', got {names!r}")
    chain = [n.strip().lower() for n in names.split("+")]
    takes = {n: set(inspect.signature(SQUEEZERS.entry(n).factory).parameters) for n in chain}
    stray = sorted(k for k in params if not any(k in t for t in takes.values()))
    if stray:
        known = ", ".join(sorted(set().union(*takes.values())))
        raise ValueError(f"no squeezer of {'+'.join(chain)} takes {', '.join(stray)} (their parameters: {known})")
    return [create_squeezer(n, **{k: v for k, v in params.items() if k in takes[n]}) for n in chain]
