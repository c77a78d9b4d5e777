"""Tiny-ImageNet-200 (Le & Yang, CS 231N 2015): the official ``tiny-imagenet-200.zip`` or the folder it extracts
to, decoded once into a uint8 cache.

Layout (inside the zip, and under the data root once extracted)::

    tiny-imagenet-200/wnids.txt                               the 200 wnids, one a line: class index = line
    tiny-imagenet-200/words.txt                               wnid <tab> names (every ImageNet wnid)
    tiny-imagenet-200/train/<wnid>/images/<wnid>_<i>.JPEG     i = 0 .. 499
    tiny-imagenet-200/val/images/val_<i>.JPEG                 i = 0 .. 9999
    tiny-imagenet-200/val/val_annotations.txt                 file <tab> wnid <tab> x0 <tab> y0 <tab> x1 <tab> y1
    tiny-imagenet-200/test/images/test_<i>.JPEG               no labels: not read

Source: the zip at ``<root>/tiny-imagenet-200.zip`` when it is there (read into memory, md5-checked, its members
read from the verified bytes); else the extracted folder ``<root>/tiny-imagenet-200/``; when neither is there,
the zip is downloaded (``download=True``) or the error names both. The folder has no checksums, so the loader
checks what it can: every expected file is there (train: ``<wnid>_<i>.JPEG`` for ``i < train_size /
num_classes`` of every wnid; test: every file val_annotations.txt names), wnids.txt holds ``num_classes``
distinct wnids, every annotation names one of them, names are plain file names (no path can leave the folder),
and every JPEG decodes to 64x64. A failure is a :class:`DataError` of one line naming the file and the official
archive. Grey JPEGs (Tiny-ImageNet has some) are converted to RGB by Pillow.

Order: train by class (wnids.txt's order), then by ``i``; test in val_annotations.txt's line order.

Cache: Pillow decodes a 64x64 JPEG in ~130 us on one core of the development CPU: ~15 s for the 110,000 images,
plus reading as many small files (longer from a cold disk). Each part is therefore decoded once into
``<root>/tiny-imagenet-200-decoded/<part>.npz`` (uncompressed; ``images`` uint8 (N, 3, 64, 64): 1.2 GB for
train, 0.12 GB for test; and ``source``, the fingerprint of what it was decoded from: the zip's md5, or the
relative path, size and mtime of every file read from the folder, with the catalog's sizes), written
atomically and used only while the fingerprint matches; the zip format's CRC-32 of each array makes a damaged
cache fail to load, and it is then decoded again. Reading the cache costs a few seconds for train. An unwritable
data root only costs the cache (a warning).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _catalog, _files
from ._types import DataError, DatasetInfo

log = logging.getLogger(__name__)

#: Bumped when the cache's content or layout changes (old caches are then decoded again).
CACHE_VERSION = 1
_PLAIN_NAME = re.compile(r"\w[\w.-]*")  # a file or folder name that cannot leave its folder


def _official(info: DatasetInfo) -> str:
    spec = info.file(_catalog.TINY_ZIP)
    return f"the official {spec.relpath} (md5 {spec.md5}) from {spec.urls[0]}"


class _Folder:
    """The extracted folder ``<root>/tiny-imagenet-200``; fingerprint: every file's relative path, size, mtime."""

    def __init__(self, root: Path, info: DatasetInfo) -> None:
        self.base = root / _catalog.TINY_DIR
        self.fix = f"the folder {self.base} is incomplete or damaged: extract {_official(info)} into {root} again"

    def where(self, rel: str) -> str:
        return str(self.base / rel)

    def has(self, rel: str) -> bool:
        return (self.base / rel).is_file()

    def read(self, rel: str) -> bytes:
        try:
            return (self.base / rel).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{self.base / rel} is missing: {self.fix}") from None
        except OSError as e:
            raise DataError(f"cannot read {self.base / rel} ({e}): {self.fix}") from None

    def fingerprint(self, rels: Sequence[str]) -> str:
        h = hashlib.md5(usedforsecurity=False)
        for rel in rels:
            try:
                st = (self.base / rel).stat()
            except FileNotFoundError:
                raise DataError(f"{self.base / rel} is missing: {self.fix}") from None
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"folder {h.hexdigest()}"


class _Zip:
    """The official zip, read from its md5-verified bytes; fingerprint: its md5."""

    def __init__(self, data: bytes, path: Path, md5: str) -> None:
        self.path, self.md5 = path, md5
        self.fix = "the zip passed its md5 check, so the catalog does not match it: report this as a bug"
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as e:
            raise DataError(f"{path} is not a readable zip ({e}): {self.fix}") from None

    def where(self, rel: str) -> str:
        return f"{self.path}:{_catalog.TINY_DIR}/{rel}"

    def has(self, rel: str) -> bool:
        return f"{_catalog.TINY_DIR}/{rel}" in self.zip.NameToInfo

    def read(self, rel: str) -> bytes:
        try:
            return self.zip.read(f"{_catalog.TINY_DIR}/{rel}")
        except KeyError:
            raise DataError(f"{self.path} has no member {_catalog.TINY_DIR}/{rel}: {self.fix}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise DataError(f"cannot unpack {self.where(rel)} ({e}): {self.fix}") from None

    def fingerprint(self, rels: Sequence[str]) -> str:
        return f"zip {self.md5}"


_Source = _Folder | _Zip


def _open(info: DatasetInfo, root: Path, download: bool) -> _Source:
    """The zip when it is at ``<root>``, else the extracted folder when it is there, else the zip obtained by
    :func:`~maskdefense.data._files.ensure_files` (downloaded, or the error naming both)."""
    spec = info.file(_catalog.TINY_ZIP)
    folder = root / _catalog.TINY_DIR
    if not (root / spec.relpath).is_file() and folder.is_dir():
        return _Folder(root, info)
    try:
        _files.ensure_files(info, [spec], root, download)
    except DataError as e:
        raise DataError(f"{e}\nOr extract the zip in {root}: the folder {folder} (wnids.txt, words.txt, train/, val/) "
                        "is read as is.") from None
    return _Zip(_files.read_verified(spec, root), root / spec.relpath, spec.md5)


def _lines(source: _Source, rel: str) -> list[str]:
    try:
        text = source.read(rel).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source.where(rel)} is not UTF-8 text ({e}): {source.fix}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _wnids(source: _Source, info: DatasetInfo) -> list[str]:
    wnids = _lines(source, "wnids.txt")
    bad = [w for w in wnids if not _PLAIN_NAME.fullmatch(w)]
    if bad or len(wnids) != info.num_classes or len(set(wnids)) != len(wnids):
        what = f"a wnid that is no plain name ({bad[0]!r})" if bad else (
            f"{len(wnids)} lines ({len(set(wnids))} distinct), expected {info.num_classes} distinct wnids")
        raise DataError(f"{source.where('wnids.txt')} holds {what}: {source.fix}")
    return wnids


def _class_names(source: _Source, wnids: list[str]) -> tuple[str, ...]:
    """Each wnid's entry of words.txt (as written there, e.g. ``"goldfish, Carassius auratus"``), else the wnid."""
    words: dict[str, str] = {}
    if source.has("words.txt"):
        for line in _lines(source, "words.txt"):
            wnid, _, names = line.partition("\t")
            words[wnid] = names.strip()
    return tuple(words.get(w) or w for w in wnids)


def _train_files(info: DatasetInfo, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    per_class = info.train_size // info.num_classes
    files = [f"train/{w}/images/{w}_{i}.JPEG" for w in wnids for i in range(per_class)]
    return files, np.repeat(np.arange(len(wnids), dtype=np.int64), per_class)


def _val_files(source: _Source, info: DatasetInfo, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    rel, index = "val/val_annotations.txt", {w: k for k, w in enumerate(wnids)}
    files, labels = [], []
    for k, line in enumerate(_lines(source, rel), 1):
        name, _, rest = line.partition("\t")
        wnid = rest.split("\t", 1)[0].strip()
        if not _PLAIN_NAME.fullmatch(name) or wnid not in index:
            raise DataError(f"{source.where(rel)} line {k} ({line[:60]!r}) does not name a plain image file and one "
                            f"of the wnids of wnids.txt: {source.fix}")
        files.append(f"val/images/{name}")
        labels.append(index[wnid])
    if len(files) != info.test_size or len(set(files)) != len(files):
        raise DataError(f"{source.where(rel)} annotates {len(files)} images ({len(set(files))} distinct), expected "
                        f"{info.test_size}: {source.fix}")
    return files, np.asarray(labels, dtype=np.int64)


def _decode(source: _Source, files: Sequence[str], size: int) -> np.ndarray:
    """The JPEGs ``files`` as uint8 ``(N, 3, size, size)``, grey ones converted to RGB."""
    from PIL import Image

    out = np.empty((len(files), 3, size, size), np.uint8)
    for k, rel in enumerate(files):
        data = source.read(rel)
        try:
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{source.where(rel)} is not a readable JPEG ({type(e).__name__}: {e}): "
                            f"{source.fix}") from None
        if arr.shape != (size, size, 3):
            raise DataError(f"{source.where(rel)} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}: "
                            f"{source.fix}")
        out[k] = arr.transpose(2, 0, 1)
    return out


def _read_cache(path: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached images if ``path`` holds them decoded from the source of fingerprint ``key``, else ``None``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["source"]) != key:
                return None
            images = z["images"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged: decoded again
        log.warning("the cache %s cannot be read (%s: %s): decoding again", path, type(e).__name__, e)
        return None
    return images if images.shape == shape and images.dtype == np.uint8 else None


def _write_cache(path: Path, key: str, images: np.ndarray) -> None:
    """Write the cache atomically (a temporary file renamed into place); a failure only logs a warning."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, source=np.array(key))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        log.warning("cannot write the cache %s (%s): the JPEGs will be decoded again at the next load", path, e)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_tiny_imagenet(info: DatasetInfo, part: str, root: Path | None,
                       download: bool) -> tuple[np.ndarray, np.ndarray, float, tuple[str, ...]]:
    """Uint8 images ``(N, 3, 64, 64)``, int64 labels, 255 and the class names of ``part`` (``"trainval"``: the
    official train set; ``"test"``: the official val set)."""
    assert root is not None
    source = _open(info, root, download)
    wnids = _wnids(source, info)
    if part == "test":
        files, labels = _val_files(source, info, wnids)
        listed = ["wnids.txt", "val/val_annotations.txt", *files]
    else:
        files, labels = _train_files(info, wnids)
        listed = ["wnids.txt", *files]
    key = (f"v{CACHE_VERSION} {part} {info.num_classes} {info.train_size} {info.test_size} {info.size} "
           f"{source.fingerprint(listed)}")
    path = root / _catalog.TINY_CACHE_DIR / f"{part}.npz"
    images = _read_cache(path, key, (len(files), 3, info.size, info.size))
    if images is None:
        log.info("decoding %d JPEGs of %s (%s), once: cached in %s", len(files), info.name, part, path)
        images = _decode(source, files, info.size)
        _write_cache(path, key, images)
    return images, labels, 255.0, _class_names(source, wnids)
