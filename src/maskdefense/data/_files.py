"""Finding, verifying and downloading dataset files.

Rules:

* a file is read once into memory, its md5 is checked on those bytes, and only verified bytes are
  parsed: a corrupted or truncated file is refused, never half-loaded;
* a download (or an archive member being unpacked) is streamed into a temporary file in the
  target folder, its md5 checked, and only then renamed into place: an interrupted or bad
  download never leaves a file under the expected name (the temporary file is removed);
* when a file is missing and cannot be obtained, :class:`DataError` names the file, its md5, the
  official URL(s) and the exact path where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from . import _catalog
from ._types import DataError, DatasetInfo, FileSpec

log = logging.getLogger(__name__)

#: Socket timeout of one download attempt, in seconds.
DOWNLOAD_TIMEOUT = 20.0
_CHUNK = 1 << 20


def md5_bytes(data: bytes | memoryview) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike[str]) -> str:
    """md5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _corrupted(path: Path, expected: str, actual: str, urls: Sequence[str], archive: str | None) -> DataError:
    where = f"it is part of the archive {archive} from {', '.join(urls)}" if archive else (
        f"official URL: {', '.join(urls)}"
    )
    return DataError(
        f"{path} is corrupted or incomplete: its md5 is {actual}, expected {expected} "
        f"(the official file). Delete it and download it again ({where}); the loader re-downloads "
        "missing files when download=True."
    )


def read_verified(spec: FileSpec, root: Path) -> bytes:
    """The bytes of ``root/spec.relpath`` after checking their md5 (``DataError`` on mismatch)."""
    path = root / spec.relpath
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    actual = md5_bytes(data)
    if actual != spec.md5:
        raise _corrupted(path, spec.md5, actual, spec.urls, spec.archive)
    return data


# ---------------------------------------------------------------------------------------------
# writing and downloading


class _BadContent(Exception):
    """A received file does not have the expected md5."""


class DownloadFailed(Exception):
    """No URL gave the expected file; the message lists each attempt's error."""


def _write_verified(dest: Path, chunks: Iterable[bytes], md5: str, source: str) -> None:
    """Stream ``chunks`` into a temporary file beside ``dest``; rename it to ``dest`` only if its md5
    is ``md5``. Raises ``_BadContent`` on a mismatch; the temporary file never survives a failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    done = False
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
            f.flush()
            os.fsync(f.fileno())
        actual = h.hexdigest()
        if actual != md5:
            raise _BadContent(f"{source}: md5 of the received file is {actual}, expected {md5}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _url_chunks(response: object) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):  # type: ignore[attr-defined]
        yield chunk


def download_file(urls: Sequence[str], dest: Path, md5: str) -> None:
    """Download ``dest`` from the first of ``urls`` that works and has md5 ``md5``.

    Raises ``DownloadFailed`` listing every attempt's error when none succeeded.
    """
    errors: list[str] = []
    for url in urls:
        log.info("downloading %s to %s", url, dest)
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                _write_verified(dest, _url_chunks(response), md5, url)
            log.info("downloaded %s (md5 ok)", dest)
            return
        except _BadContent as e:
            errors.append(str(e))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            errors.append(f"{url}: {type(e).__name__}: {e}")
    raise DownloadFailed("; ".join(errors) if errors else "no URL to download from")


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def extract_members(archive: Path, specs: Sequence[FileSpec], root: Path,
                    optional: Sequence[FileSpec] = ()) -> None:
    """Unpack the members ``spec.relpath`` of the tar archive ``archive`` to ``root/spec.relpath``.

    Only the named regular-file members are read (their names come from the catalog, never from the
    archive, so no path can escape ``root``); each is md5-checked and written atomically. Members of
    ``specs`` must be in the archive; members of ``optional`` are unpacked if they are.
    """
    wanted = {spec.relpath: spec for spec in (*optional, *specs)}
    required = {spec.relpath for spec in specs}
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _member_name(member.name)
                if name not in wanted or name in found or not member.isfile():
                    continue
                spec = wanted[name]
                fileobj = tar.extractfile(member)
                if fileobj is None:  # pragma: no cover - isfile() members always have data
                    continue
                try:
                    _write_verified(root / name, iter(lambda: fileobj.read(_CHUNK), b""), spec.md5,
                                    f"member {name} of {archive}")
                except _BadContent as e:
                    raise DataError(
                        f"{e}. The archive passed its md5 check, so this member does not match the "
                        "catalog; report this as a bug."
                    ) from None
                found.add(name)
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot unpack {archive}: {type(e).__name__}: {e}. Delete it and download it again."
        ) from None
    except OSError as e:
        raise DataError(f"cannot unpack {archive} into {root}: {e}") from None
    missing = sorted(required - found)
    if missing:
        raise DataError(f"{archive} does not contain {', '.join(missing)}; it is not the official archive")


# ---------------------------------------------------------------------------------------------
# making sure files are present


def missing_message(info: DatasetInfo, specs: Sequence[FileSpec], root: Path, reason: str) -> str:
    """An actionable description of missing files: paths, md5s, official URLs, what to do."""
    lines = [f"{info.name}: {len(specs)} file(s) missing under the data root {root}:"]
    archives: dict[str, FileSpec] = {}
    for spec in specs:
        lines.append(f"  - {root / spec.relpath}")
        if spec.archive:
            archives.setdefault(spec.archive, spec)
            lines.append(
                f"      md5 {spec.md5}; member of the official archive {spec.archive} "
                f"(md5 {_catalog.ARCHIVE_MD5.get(spec.archive, '?')}) at {', '.join(spec.urls)}"
            )
        else:
            lines.append(f"      md5 {spec.md5}; official URL: {' or '.join(spec.urls)}")
    lines.append(reason)
    fix = "To fix: "
    if archives:
        for name, spec in archives.items():
            lines.append(
                f"{fix}download {spec.urls[0]}, check its md5 ({_catalog.ARCHIVE_MD5.get(name, '?')}) "
                f"and put it at {root / name} (it is verified and unpacked on the next load), or "
                f"unpack it yourself inside {root}."
            )
            fix = "Also: "
    if any(spec.archive is None for spec in specs):
        lines.append(f"{fix}download each file above and put it at exactly the path shown.")
    lines.append(
        "Or point the loader at a folder that already holds the files: root=... / --data-root, "
        f"or the environment variable {_catalog.ENV_VAR}."
    )
    return "\n".join(lines)


def ensure_files(info: DatasetInfo, specs: Sequence[FileSpec], root: Path, download: bool) -> None:
    """Make sure every file of ``specs`` exists under ``root``.

    Missing archive members are unpacked from the archive if it is already at ``root/<archive>``
    (after checking its md5, no network needed); otherwise, with ``download``, the file or the
    archive is downloaded from its official URL(s). Whatever cannot be obtained is reported in one
    :class:`DataError` (see :func:`missing_message`).
    """
    missing = [s for s in specs if not (root / s.relpath).is_file()]
    if not missing:
        return
    failures: list[str] = []
    still_missing: list[FileSpec] = []
    # whole archives first: one archive provides several files
    by_archive: dict[str, list[FileSpec]] = {}
    for spec in missing:
        if spec.archive:
            by_archive.setdefault(spec.archive, []).append(spec)
    for archive, group in by_archive.items():
        apath = root / archive
        amd5 = _catalog.ARCHIVE_MD5[archive]
        if not apath.is_file():
            if not download:
                still_missing.extend(group)
                continue
            try:
                download_file(group[0].urls, apath, amd5)
            except DownloadFailed as e:
                failures.append(f"{archive}: {e}")
                still_missing.extend(group)
                continue
        else:
            actual = md5_file(apath)
            if actual != amd5:
                raise _corrupted(apath, amd5, actual, group[0].urls, None)
        # also unpack the other missing members of this archive the dataset knows (other splits)
        others = [s for s in info.files if s.archive == archive and s not in group
                  and not (root / s.relpath).is_file()]
        extract_members(apath, group, root, optional=others)
    for spec in missing:
        if spec.archive:
            continue
        if not download:
            still_missing.append(spec)
            continue
        try:
            download_file(spec.urls, root / spec.relpath, spec.md5)
        except DownloadFailed as e:
            failures.append(f"{Path(spec.relpath).name}: {e}")
            still_missing.append(spec)
    if still_missing:
        if not download:
            reason = "Download was not attempted (download=False)."
        else:
            reason = "Download failed: " + " | ".join(failures)
        raise DataError(missing_message(info, still_missing, root, reason))
