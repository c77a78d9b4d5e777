"""Dataset loading and the split convention."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import _catalog, _files, _formats
from ._tiny_imagenet import load_tiny_imagenet
from ._types import DataError, DatasetInfo, DatasetName, FileSpec, ImageData

#: Valid values of ``load_dataset(split=...)``.
SPLITS = ("train", "val", "test", "trainval")

# A raw loader returns uint8 images (N, C, H, W), int64 labels (N,), the value of full intensity and the class
# names (the catalog's, or those the files give).
_Raw = tuple[np.ndarray, np.ndarray, float, tuple[str, ...]]


# ---------------------------------------------------------------------------------------------
# raw loaders: (info, part in {"trainval", "test"}, root, download) -> _Raw


def _digits_test_indices() -> tuple[np.ndarray, np.ndarray]:
    """(test, trainval) indices into ``load_digits()``, each in increasing order."""
    g = torch.Generator().manual_seed(_catalog.DIGITS_TEST_SEED)
    perm = torch.randperm(_catalog._DIGITS_TOTAL, generator=g)
    test = perm[: _catalog.DIGITS_TEST_SIZE].sort().values.numpy()
    trainval = perm[_catalog.DIGITS_TEST_SIZE :].sort().values.numpy()
    return test, trainval


def _load_digits(info: DatasetInfo, part: str, root: Path | None, download: bool) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    if images.shape != (_catalog._DIGITS_TOTAL, 8, 8):  # pragma: no cover - scikit-learn ships it
        raise DataError(f"sklearn.datasets.load_digits() returned images of shape {images.shape}, expected (1797, 8, 8)")
    test, trainval = _digits_test_indices()
    idx = test if part == "test" else trainval
    return images[idx, None].astype(np.uint8), np.asarray(bunch.target)[idx].astype(np.int64), 16.0, info.classes


def _mnist_specs(info: DatasetInfo, part: str) -> list[FileSpec]:
    prefix = "t10k" if part == "test" else "train"
    return [
        info.file(f"{_catalog.MNIST_DIR}/{prefix}-images-idx3-ubyte.gz"),
        info.file(f"{_catalog.MNIST_DIR}/{prefix}-labels-idx1-ubyte.gz"),
    ]


def _load_mnist(info: DatasetInfo, part: str, root: Path | None, download: bool) -> _Raw:
    assert root is not None
    specs = _mnist_specs(info, part)
    _files.ensure_files(info, specs, root, download)
    img_spec, lbl_spec = specs
    images, labels = _formats.parse_mnist(
        _files.read_verified(img_spec, root), _files.read_verified(lbl_spec, root),
        str(root / img_spec.relpath), str(root / lbl_spec.relpath),
    )
    return images, labels, 255.0, info.classes


def _cifar_specs(info: DatasetInfo, version: str, part: str) -> list[FileSpec]:
    if version == "bin":
        folder, suffix = _catalog.CIFAR_BIN_DIR, ".bin"
    else:
        folder, suffix = _catalog.CIFAR_PY_DIR, ""
    names = ["test_batch"] if part == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    return [info.file(f"{folder}/{name}{suffix}") for name in names]


def _cifar_version(info: DatasetInfo, part: str, root: Path) -> str | None:
    """Which official version to read: ``"bin"`` or ``"py"``, or ``None`` when neither is there.

    Preference: a version whose needed files are all present (binary first), then a version whose
    folder or archive is present (binary first)."""
    versions = (("bin", _catalog.CIFAR_BIN_DIR, _catalog.CIFAR_BIN_ARCHIVE),
                ("py", _catalog.CIFAR_PY_DIR, _catalog.CIFAR_PY_ARCHIVE))
    for version, _, _ in versions:
        if all((root / s.relpath).is_file() for s in _cifar_specs(info, version, part)):
            return version
    for version, folder, archive in versions:
        if (root / folder).is_dir() or (root / archive).is_file():
            return version
    return None


def _load_cifar10(info: DatasetInfo, part: str, root: Path | None, download: bool) -> _Raw:
    assert root is not None
    version = _cifar_version(info, part, root)
    if version is None:
        specs = _cifar_specs(info, "bin", part)
        try:
            _files.ensure_files(info, specs, root, download)
        except DataError as e:
            py_msg = _files.missing_message(
                info, _cifar_specs(info, "py", part), root,
                "(Either version works; the binary version is preferred when both are present.)",
            )
            raise DataError(
                f"CIFAR-10 not found under {root}: neither the binary version "
                f"({_catalog.CIFAR_BIN_DIR}/) nor the python version ({_catalog.CIFAR_PY_DIR}/) is there.\n"
                f"Binary version -- {e}\nPython version -- {py_msg}"
            ) from None
        version = "bin"
    specs = _cifar_specs(info, version, part)
    _files.ensure_files(info, specs, root, download)
    parse = _formats.parse_cifar_bin if version == "bin" else _formats.parse_cifar_pickle
    images, labels = [], []
    for spec in specs:
        x, y = parse(_files.read_verified(spec, root), str(root / spec.relpath))
        images.append(x)
        labels.append(y)
    if len(specs) == 1:
        return images[0], labels[0], 255.0, info.classes
    return np.concatenate(images), np.concatenate(labels), 255.0, info.classes


def _load_svhn(info: DatasetInfo, part: str, root: Path | None, download: bool) -> _Raw:
    assert root is not None
    spec = info.file(f"{_catalog.SVHN_DIR}/{'test' if part == 'test' else 'train'}_32x32.mat")
    _files.ensure_files(info, [spec], root, download)
    images, labels = _formats.parse_svhn_mat(_files.read_verified(spec, root), str(root / spec.relpath))
    return images, labels, 255.0, info.classes


_RAW_LOADERS: dict[DatasetName, Callable[[DatasetInfo, str, Path | None, bool], _Raw]] = {
    DatasetName.DIGITS: _load_digits,
    DatasetName.MNIST: _load_mnist,
    DatasetName.CIFAR10: _load_cifar10,
    DatasetName.SVHN: _load_svhn,
    DatasetName.TINY_IMAGENET: load_tiny_imagenet,
}


def load_raw(name: str | DatasetName, part: str, root: str | os.PathLike[str] | None = None,
             download: bool = True) -> _Raw:
    """Uint8 images, int64 labels, the full-intensity value and the class names of an official part
    (``"trainval"`` or ``"test"``); used by :func:`load_dataset`."""
    info = _catalog.dataset_info(name)
    key = _catalog._canonical(name)
    needs_root = bool(info.files)
    return _RAW_LOADERS[key](info, part, _catalog.resolve_data_root(root) if needs_root else None, download)


# ---------------------------------------------------------------------------------------------
# splits


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: positions into a trainval set of size ``n``; ``val`` is the first
    ``val_size`` entries of ``torch.randperm(n)`` under a ``torch.Generator`` seeded ``seed``,
    ``train`` is the rest; both sorted (official order is kept inside each split)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return perm[val_size:].sort().values.numpy(), perm[:val_size].sort().values.numpy()


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


def load_dataset(
    name: str | DatasetName,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    val_size: int | None = None,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageData:
    """Load a split of a dataset as float32 images in ``[0, 1]`` and int64 labels.

    Args:
        name: dataset name (see :func:`list_datasets`), case-insensitive, or a :class:`DatasetName`.
        split: ``"test"`` (the official test set), ``"trainval"`` (the whole official training set),
            ``"val"`` (a fixed, seeded subset of the official training set, of size ``val_size``) or
            ``"train"`` (trainval minus val: the two are disjoint and together exactly trainval).
        root: data root (see :func:`resolve_data_root`); ignored by ``digits``.
        download: fetch missing files from the official URL(s) (verified by md5, written atomically).
        val_size: size of the val split (default ``DatasetInfo.default_val_size``); used by
            ``"train"`` and ``"val"`` only.
        split_seed: seed of the ``torch.Generator`` that chooses the val split.
        limit: keep only the first ``limit`` examples of the split (for quick runs).

    Returns:
        An :class:`ImageData`; within each split, examples keep their official order.

    Raises:
        UnknownNameError: unknown dataset name.
        ValueError: unknown split, or ``val_size`` not smaller than the training set.
        DataError: a file is missing (and could not be downloaded), corrupted, or malformed.
    """
    info = _catalog.dataset_info(name)
    split_key = split.strip().lower() if isinstance(split, str) else split
    if split_key not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {info.name}; valid splits: {', '.join(SPLITS)}")
    if limit is not None:
        limit = _check_count(limit, "limit")
    if val_size is not None:
        val_size = _check_count(val_size, "val_size")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        raise TypeError(f"split_seed must be an int, got {type(split_seed).__name__}")

    part = "test" if split_key == "test" else "trainval"
    images_u8, labels, full, classes = load_raw(info.name, part, root, download)
    n = labels.shape[0]
    idx: np.ndarray | None = None
    if split_key in ("train", "val"):
        vs = info.default_val_size if val_size is None else val_size
        if vs >= n:
            raise ValueError(
                f"val_size={vs} leaves no training examples: {info.name} has {n} trainval examples; "
                "pass a smaller val_size"
            )
        train_idx, val_idx = split_indices(n, vs, int(split_seed))
        idx = train_idx if split_key == "train" else val_idx
    if limit is not None:
        idx = (np.arange(n) if idx is None else idx)[:limit]

    selected = np.ascontiguousarray(images_u8 if idx is None else images_u8[idx])
    with warnings.catch_warnings():
        # the uint8 buffer may be read-only (parsed file bytes); it is only read, into a new tensor
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(selected).to(torch.float32).div_(full)
    lab = labels if idx is None else labels[idx]
    return ImageData(
        images=images.contiguous(),
        labels=torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int64).copy()),
        classes=classes,
        name=info.name,
        split=split_key,
    )
