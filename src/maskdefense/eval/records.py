"""Append-only JSONL record files that survive being killed at any moment.

Records are written in *groups* (all records of one batch of one attack): one ``write`` of complete
lines, then ``flush`` and ``fsync``. Every record carries its ``group`` id and the group's size. On
opening, the store reads complete lines, drops a trailing partial line, and drops groups with fewer
records than their size (a write interrupted between lines); if anything was dropped, the file is
rewritten atomically with only the complete groups. So a killed run loses at most the group being
written, which the rerun recomputes -- no record is lost or duplicated.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator


__all__ = ["RecordStore", "RecordFileError"]


class RecordFileError(RuntimeError):
    """A record file that is damaged somewhere other than its end, or holds duplicate records."""


class RecordStore:
    """A JSONL file of records grouped for atomic appends; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.done_groups: set[str] = set()
        self.keys: set[str] = set()
        self.n_records = 0
        self.repaired = 0  # records dropped when the file was opened

    def open(self) -> "RecordStore":
        """Read the existing file (if any), repair its tail, and index the complete groups.

        Streams the file twice at most (memory holds only the record keys)."""
        self.done_groups.clear()
        self.keys.clear()
        self.n_records = 0
        self.repaired = 0
        if not self.path.exists():
            return self
        sizes: dict[str, int] = {}
        counts: Counter[str] = Counter()
        group_keys: dict[str, list[str]] = {}
        partial = False
        with open(self.path, "rb") as f:
            for i, line in enumerate(f):
                if not line.endswith(b"\n"):
                    partial = bool(line.strip())  # the last, unterminated line of a killed write
                    break
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise RecordFileError(f"{self.path}: line {i + 1} is not valid JSON (the file was edited or "
                                          "damaged; delete it to start over)") from None
                g = rec.get("group") if isinstance(rec, dict) else None
                if g is None or "group_size" not in rec:
                    raise RecordFileError(f"{self.path}: line {i + 1} is not a record of this harness")
                sizes[g] = int(rec["group_size"])
                counts[g] += 1
                group_keys.setdefault(g, []).append(rec.get("key"))
        over = [g for g, c in counts.items() if c > sizes[g]]
        if over:
            raise RecordFileError(f"{self.path}: group {over[0]!r} has more records than its size (duplicated records)")
        complete = {g for g, c in counts.items() if c == sizes[g]}
        dropped = sum(c for g, c in counts.items() if g not in complete) + int(partial)
        if dropped:
            self._rewrite(complete)
        for g in complete:
            for key in group_keys[g]:
                if key in self.keys:
                    raise RecordFileError(f"{self.path}: duplicate record {key!r}")
                self.keys.add(key)
        self.done_groups = complete
        self.n_records = sum(counts[g] for g in complete)
        self.repaired = dropped
        return self

    def _rewrite(self, complete: set[str]) -> None:
        """Atomically replace the file with only the records of complete groups."""
        tmp = self.path.with_name(f".{self.path.name}.repair.tmp")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            for line in src:
                if not line.endswith(b"\n") or not line.strip():
                    continue
                if json.loads(line)["group"] in complete:
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)

    def append_group(self, group: str, records: list[dict[str, Any]]) -> None:
        """Append one complete group of records atomically (one write, flush, fsync)."""
        if group in self.done_groups:
            raise RecordFileError(f"group {group!r} is already recorded")
        if not records:
            raise ValueError("empty group")
        lines = []
        for rec in records:
            rec = {**rec, "group": group, "group_size": len(records)}
            if rec.get("key") in self.keys:
                raise RecordFileError(f"record {rec.get('key')!r} is already recorded")
            lines.append(json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=True))
        blob = ("\n".join(lines) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(blob)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done_groups.add(group)
        for rec in records:
            self.keys.add(rec.get("key"))
        self.n_records += len(records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stream the records (complete lines only) without holding the file in memory."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                if line.endswith(b"\n") and line.strip():
                    yield json.loads(line)

    def reset(self) -> None:
        """Delete the file (start over)."""
        if self.path.exists():
            self.path.unlink()
        self.open()
