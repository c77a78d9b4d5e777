"""Parsers of the official file formats, vectorized with numpy (no per-image Python loops).

Every parser takes verified bytes and returns ``(images, labels)``: ``images`` a uint8 array
``(N, C, H, W)``, ``labels`` an int64 array ``(N,)``. Anything unexpected raises :class:`DataError`.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from typing import Any, Callable

import numpy as np

from ._types import DataError

# ---------------------------------------------------------------------------------------------
# MNIST idx

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def gunzip(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{what} is not a valid gzip file ({type(e).__name__}: {e}); delete it and download it again") from None


def parse_idx(raw: bytes, magic: int, what: str) -> np.ndarray:
    """Parse an uncompressed idx file of unsigned bytes: big-endian magic, then one big-endian
    uint32 per dimension, then the data. Checks the magic number and that the size is exact."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{what} is truncated: {len(raw)} bytes, shorter than its idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{what} has idx magic number 0x{found:08x}, expected 0x{magic:08x}: it is not the right "
            "MNIST file (images and labels swapped, or another file under this name)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{what} is {state}: {len(raw)} bytes, its header (dims {dims}) implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def parse_mnist(images_gz: bytes, labels_gz: bytes, images_what: str, labels_what: str) -> tuple[np.ndarray, np.ndarray]:
    images = parse_idx(gunzip(images_gz, images_what), IDX_IMAGES_MAGIC, images_what)
    labels = parse_idx(gunzip(labels_gz, labels_what), IDX_LABELS_MAGIC, labels_what)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_what} holds {images.shape[1]}x{images.shape[2]} images, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_what} holds {images.shape[0]} images but {labels_what} holds {labels.shape[0]} labels")
    _check_labels(labels, 10, labels_what)
    return images[:, None, :, :], labels.astype(np.int64)


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{what} has labels outside 0..{num_classes - 1} (range {int(labels.min())}..{int(labels.max())})")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary version

CIFAR_RECORD = 1 + 3 * 32 * 32


def parse_cifar_bin(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte then 1024 R, 1024 G, 1024 B bytes (row-major)."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataError(
            f"{what} is {len(data)} bytes, not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records "
            "(truncated or not a binary-version batch)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, 10, what)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python version (pickles), read without executing code


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` (how Python 3 spells ``bytes`` in protocol-2 pickles): only
    the latin-1 text-to-bytes encoding is allowed."""
    if not isinstance(obj, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("only latin-1 string encoding is allowed in a CIFAR-10 batch")
    return obj.encode("latin-1", errors="strict")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    # The functions numpy itself uses to pickle arrays, found without importing deprecated modules.
    reconstruct = np.ndarray(0, np.uint8).__reduce__()[0]
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild plain data and numpy arrays.

    ``find_class`` resolves only the numpy globals needed to rebuild arrays (``_reconstruct``,
    ``_frombuffer``, ``ndarray``, ``dtype``) and a latin-1-only ``_codecs.encode``; any other global
    (and therefore any ``__reduce__`` payload calling arbitrary code) raises ``UnpicklingError``,
    and persistent ids are refused. Loading a pickle with it never executes code from the file.
    """

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (only numpy array reconstruction is)"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_loads(data: bytes, what: str) -> Any:
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure of a hostile or broken pickle is a data error
        raise DataError(
            f"refused to load {what}: {type(e).__name__}: {e}. It is not an official CIFAR-10 python "
            "batch (or it carries code); delete it and download the official file again."
        ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def parse_cifar_pickle(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A python-version batch: a pickled dict with ``b"data"`` (uint8 ``(N, 3072)``, rows of 1024 R,
    1024 G, 1024 B) and ``b"labels"`` (N ints)."""
    obj = restricted_loads(data, what)
    if not isinstance(obj, dict):
        raise DataError(f"{what} does not hold a dict but a {type(obj).__name__}: not a CIFAR-10 python batch")
    images, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{what}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise TypeError(f"{labels.dtype} array of shape {labels.shape}")
        labels = labels.astype(np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what}: 'labels' must be a list of integers ({e})") from None
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{what} holds {images.shape[0]} images but {labels.shape[0]} labels")
    _check_labels(labels, 10, what)
    return np.ascontiguousarray(images).reshape(-1, 3, 32, 32), labels


# ---------------------------------------------------------------------------------------------
# SVHN .mat


def parse_svhn_mat(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` uint8 ``(32, 32, 3, N)`` and ``y`` ``(N, 1)`` with 10 meaning digit 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(io.BytesIO(data))
    except Exception as e:  # scipy raises assorted errors on a bad file
        raise DataError(f"{what} is not a readable MATLAB file ({type(e).__name__}: {e}); delete it and download it again") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "missing"
        raise DataError(f"{what}: 'X' must be a uint8 array of shape (32, 32, 3, N), got {desc}")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf" or y.size != x.shape[3]:
        desc = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else "missing"
        raise DataError(f"{what}: 'y' must hold {x.shape[3]} labels, got {desc}")
    labels = y.reshape(-1)
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{what}: 'y' holds non-integer labels")
    labels = labels.astype(np.int64)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 10):
        raise DataError(f"{what}: labels must lie in 1..10 (10 = digit 0), got {int(labels.min())}..{int(labels.max())}")
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, labels
