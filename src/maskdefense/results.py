"""Writing a results folder: ``README.md`` (markdown table + provenance), ``results.csv``,
``results.json`` (rows + the run metadata record), plots beside them. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from .provenance import atomic_write_json, atomic_write_text


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}%"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None, formatters: dict[str, Any] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)
    formatters = formatters or {}
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(formatters.get(c, fmt)(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c) for c in columns})
    return buf.getvalue()


def provenance_block(meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
    lines = [
        "## Provenance",
        "",
        f"- command: `{meta.get('command')}`",
        f"- seed: {meta.get('seed')}",
        f"- git commit: {meta.get('git_commit')}",
        *([f"- commits that computed the records: {', '.join(meta['record_commits'])}"]
          if meta.get("record_commits") else []),
        f"- versions: {versions}",
        f"- wall time of this command: {meta.get('wall_time_s')} s",
        f"- machine: {(meta.get('machine') or {}).get('cpus')} CPUs, {(meta.get('machine') or {}).get('platform')}",
    ]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | Path,
    *,
    title: str,
    intro: str,
    sections: Iterable[str],
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write README.md (title, intro, the given markdown sections, provenance), results.csv (rows) and
    results.json ({"meta": ..., "rows": ...})."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {"meta": meta, "rows": list(rows)})
    atomic_write_text(out / "results.csv", csv_text(rows, columns))
    body = [f"# {title}", "", intro.strip(), ""] + [s.rstrip() + "\n" for s in sections] + [provenance_block(meta)]
    atomic_write_text(out / "README.md", "\n".join(body))
    return out


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    from .provenance import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())
