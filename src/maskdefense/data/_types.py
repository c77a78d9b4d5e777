"""Public value types of :mod:`maskdefense.data`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor


Indices = Union[Sequence[int], Tensor, np.ndarray, slice, range]


def _positions(indices: Indices, n: int, what: str) -> Tensor:
    """int64 positions ``(m,)`` into a set of ``n`` examples from a slice, a range, integer positions
    (negative ones counted from the end) or a boolean mask of length ``n``."""
    if isinstance(indices, slice):
        return torch.arange(n)[indices]
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, Tensor) else indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean mask must have shape ({n},), got {tuple(idx.shape)}")
        return idx.nonzero().flatten()
    if idx.numel() == 0:
        idx = idx.long()
    elif idx.is_floating_point() or idx.is_complex():
        raise IndexError("indices must be integers")
    idx = idx.long().flatten()
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"index out of range for {what} of length {n}")
    return torch.where(idx < 0, idx + n, idx)


class DatasetName(str, enum.Enum):
    """The datasets :func:`maskdefense.data.load_dataset` knows."""

    DIGITS = "digits"
    MNIST = "mnist"
    CIFAR10 = "cifar10"
    SVHN = "svhn"
    TINY_IMAGENET = "tiny-imagenet"

    def __str__(self) -> str:
        return self.value


class DataError(RuntimeError):
    """A dataset file is missing, corrupted (md5 mismatch, truncated) or not in the expected format.

    The message says which file, what was expected (md5, official URL) and what to do about it.
    """


@dataclass(frozen=True)
class FileSpec:
    """One official file a loader reads.

    Attributes:
        relpath: path of the file relative to the data root, with ``/`` separators
            (e.g. ``"MNIST/raw/t10k-images-idx3-ubyte.gz"``).
        md5: official md5 of the file itself (hex, lower case).
        urls: official URL(s) of the file, or of the archive that contains it; tried in order.
        archive: name of the official archive (stored at ``<root>/<archive>``) whose member
            ``relpath`` is this file, or ``None`` when ``urls`` point at the file itself.
    """

    relpath: str
    md5: str
    urls: tuple[str, ...]
    archive: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registry name (``"mnist"``).
        channels: image channels (1 or 3).
        size: image side in pixels (images are square).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        classes: class names, index = label; empty when the files name the classes and the loader reads
            them (Tiny-ImageNet: ``wnids.txt`` and ``words.txt``; :attr:`ImageData.classes` has them).
        train_size: size of the official training set (split ``"trainval"``).
        test_size: size of the official test set (split ``"test"``; Tiny-ImageNet: its labelled val set).
        default_val_size: size of split ``"val"`` when ``val_size`` is not given.
        files: every official file the loader may read (all versions, for CIFAR-10).
        description: one paragraph: source, format, split conventions.
    """

    name: str
    channels: int
    size: int
    num_classes: int
    classes: tuple[str, ...]
    train_size: int
    test_size: int
    default_val_size: int
    files: tuple[FileSpec, ...]
    description: str

    def file(self, relpath: str) -> FileSpec:
        """The :class:`FileSpec` whose ``relpath`` is ``relpath`` (``KeyError`` if none)."""
        for spec in self.files:
            if spec.relpath == relpath:
                return spec
        raise KeyError(f"dataset {self.name!r} has no file {relpath!r}")


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A labelled image set held in memory.

    Attributes:
        images: ``(N, C, H, W)`` float32 tensor with values in ``[0, 1]``, contiguous.
        labels: ``(N,)`` int64 tensor.
        classes: class names, index = label.
        name: dataset name (``"mnist"``).
        split: split name (``"train"``, ``"val"``, ``"test"``, ``"trainval"``).
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.dim() != 4:
            raise ValueError("ImageData.images must be a (N, C, H, W) tensor")
        if self.images.dtype != torch.float32:
            raise ValueError(f"ImageData.images must be float32, got {self.images.dtype}")
        if not isinstance(self.labels, Tensor) or self.labels.dim() != 1:
            raise ValueError("ImageData.labels must be a (N,) tensor")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"ImageData.labels must be int64, got {self.labels.dtype}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"ImageData has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if not self.images.is_contiguous():
            object.__setattr__(self, "images", self.images.contiguous())
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, image_shape={shape})"

    def subset(self, indices: Indices) -> ImageData:
        """A new :class:`ImageData` holding the examples at ``indices`` (in that order).

        ``indices`` may be a slice, a range, a sequence / array / tensor of integer positions, or a
        boolean mask of length ``len(self)``. Tensors are copied, never shared.
        """
        idx = _positions(indices, len(self), "ImageData")
        return ImageData(
            images=self.images.index_select(0, idx).contiguous(),
            labels=self.labels.index_select(0, idx),
            classes=self.classes,
            name=self.name,
            split=self.split,
        )

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(images, labels)``."""
        return self.images, self.labels


@dataclass(frozen=True, eq=False, repr=False)
class PartData:
    """Labelled images with per-pixel part labels, held in memory.

    Attributes:
        images: ``(N, C, H, W)`` float32 in ``[0, 1]``, contiguous.
        labels: ``(N,)`` int64 class labels.
        part_map: ``(N, H, W)`` uint8: 0 the background, ``1 + p`` part ``part_names[p]`` (one part per pixel:
            the visible one; :meth:`part_masks` expands it into one mask per part).
        part_names: the part vocabulary, index = part.
        classes: class names, index = label.
        name: dataset name.
        split: split name.
    """

    images: Tensor
    labels: Tensor
    part_map: Tensor
    part_names: tuple[str, ...]
    classes: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self) -> None:
        images = ImageData(self.images, self.labels, self.classes, self.name, self.split).images  # same checks
        object.__setattr__(self, "images", images)
        pm = self.part_map
        if not isinstance(pm, Tensor) or pm.dtype != torch.uint8 or pm.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"PartData.part_map must be a uint8 (N, H, W) tensor matching the images "
                             f"{tuple(images.shape)}, got {getattr(pm, 'dtype', type(pm))} {tuple(getattr(pm, 'shape', ()))}")
        if pm.numel() and int(pm.max()) > len(self.part_names):
            raise ValueError(f"PartData.part_map has label {int(pm.max())} but only {len(self.part_names)} parts")
        object.__setattr__(self, "part_names", tuple(self.part_names))
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"PartData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={tuple(self.images.shape[1:])}, parts={len(self.part_names)})")

    def part_masks(self) -> Tensor:
        """``(N, P, H, W)`` bool: ``[n, p]`` is the mask of part ``p`` in image ``n``."""
        ids = torch.arange(1, len(self.part_names) + 1, dtype=torch.uint8)
        return self.part_map[:, None] == ids[None, :, None, None]

    def part_areas(self) -> Tensor:
        """``(N, P)`` float32: the fraction of each image's pixels that shows each part."""
        counts = torch.zeros(len(self), len(self.part_names) + 1)
        counts.scatter_add_(1, self.part_map.flatten(1).long(), torch.ones(self.part_map.flatten(1).shape))
        return counts[:, 1:] / self.part_map[0].numel()

    def subset(self, indices: Indices) -> PartData:
        """A new :class:`PartData` with the examples at ``indices`` (as :meth:`ImageData.subset`)."""
        idx = _positions(indices, len(self), "PartData")
        return PartData(self.images.index_select(0, idx).contiguous(), self.labels.index_select(0, idx),
                        self.part_map.index_select(0, idx), self.part_names, self.classes, self.name, self.split)

    def image_data(self) -> ImageData:
        """The images and class labels alone (to train or evaluate the classifier)."""
        return ImageData(self.images, self.labels, self.classes, self.name, self.split)
