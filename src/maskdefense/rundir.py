"""Output folders of long runs: one writer at a time.

``with exclusive(out_dir, "evaluate"):`` takes an exclusive, non-blocking lock on ``out_dir/.lock``
(``fcntl.flock``: released by the kernel when the process dies, so a killed run never leaves a stale
lock). A second run into a busy folder gets :class:`BusyError` at once, naming the holder, and writes
nothing. The folder must be writable; a path that is a file is refused.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["BusyError", "OutputDirError", "exclusive", "check_output_dir"]

LOCK_NAME = ".lock"


class OutputDirError(ValueError):
    """An output folder that cannot be used: a file, not writable."""


class BusyError(OutputDirError):
    """Another process is writing into the output folder."""


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that it is a writable folder; raise :class:`OutputDirError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"output path {p} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create output folder {p}: {e.strerror or e}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputDirError(f"output folder {p} is not writable")
    return p


@contextmanager
def exclusive(path: str | os.PathLike[str], what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on the folder ``path`` for the block (see the module docstring)."""
    import fcntl

    p = check_output_dir(path)
    lock = p / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except (ValueError, OSError):
                holder = {}
            who = f" ({holder.get('what', 'a run')}, pid {holder.get('pid', '?')})" if holder else ""
            raise BusyError(f"{p} is in use by another process{who}; wait for it to finish or use another "
                            "output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"what": what, "pid": os.getpid()}).encode(), 0)
        try:
            yield p
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
