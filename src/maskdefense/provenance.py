"""Provenance and atomic file output.

Every result file and checkpoint records the command, seed, git commit, library versions and wall time;
every file is written atomically (temporary file in the same folder, fsync, rename), so an interrupted
run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBS = ("maskdefense", "torch", "numpy", "scipy", "scikit-learn", "safetensors", "foolbox", "pyautoattack")


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the git checkout containing ``path`` (default: this package), with ``+dirty``
    appended when tracked files have uncommitted changes; ``None`` outside a checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            # code and configuration only: results written by running jobs do not make a checkout dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def command_line() -> str:
    """The command that started this process, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("maskdefense", "maskdefense.exe")):
        argv[0] = "maskdefense"
    return " ".join(argv)


def run_metadata(seed: int | None, command: str | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance record written beside every result."""
    return {
        "command": command if command is not None else command_line(),
        "seed": seed,
        "git_commit": git_commit(),
        "versions": library_versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
