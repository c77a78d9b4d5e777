"""Named attack suites, as data, and attack lists: :func:`parse_attacks` expands ``suite:<name>``.

A suite is a list of attack rows, each with our spec, the paper's row label and (optionally) the paper's
numbers for side-by-side tables; its title and benign accuracy feed the reports. The suites themselves
live with their paper (:mod:`maskdefense.papers`), which registers them with :func:`add_suite` when the
plugin group ``maskdefense.plugins`` is loaded (lazily, at the first lookup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..registry import PAPERS, Registry, UnknownNameError
from ..spec import SpecError
from .spec import AttackSpec, parse_attack_spec, parse_overrides, split_specs

__all__ = ["Suite", "SuiteRow", "SUITES", "add_suite", "get_suite", "list_suites", "parse_attacks"]


@dataclass(frozen=True)
class SuiteRow:
    label: str  # the paper's row name, e.g. "FGSM L1 eps=10"
    spec: str  # our spec, e.g. "fgsm-l1:eps=10"
    paper: dict[str, float] | None = None  # {"attack", "defense", "improvement"} as fractions


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    rows: tuple[SuiteRow, ...]
    source: str = ""
    dataset: str | None = None
    paper_benign: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def specs(self) -> list[AttackSpec]:
        out = []
        for r in self.rows:
            s = parse_attack_spec(r.spec)
            out.append(AttackSpec(s.name, s.params, s.given, s.settings, label=r.label, paper=r.paper))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": self.source,
                "dataset": self.dataset, "paper_benign": self.paper_benign,
                "rows": [{"label": r.label, "spec": r.spec, "paper": r.paper} for r in self.rows]}


SUITES: Registry[Suite] = Registry("attack suite", plugins=PAPERS)


def add_suite(s: Suite) -> Suite:
    """Register a suite (each paper's module in :mod:`maskdefense.papers` adds its own)."""
    SUITES.add(s.name, lambda: s, s.description)
    return s


def get_suite(name: str) -> Suite:
    try:
        return SUITES.create(name.strip())
    except UnknownNameError as e:
        raise SpecError(str(e)) from None


def list_suites(pattern: str = "*") -> list[str]:
    return SUITES.list(pattern)


def parse_attacks(
    text: str | AttackSpec | Iterable[str | AttackSpec],
    overrides: str | Mapping[str, Mapping[str, Any]] | None = None,
) -> list[AttackSpec]:
    """Parse a list of attacks: ``"fgsm-l1:eps=10;pgd-linf:eps=0.3"``, ``"suite:mad-table5-mnist"``,
    a mix, or an iterable of specs/strings. ``overrides`` (``"cw-l2:steps=100"`` or a dict) change
    parameters of every listed attack of that name (a way to shorten CW/EAD in quick runs; the changed
    values are what the results record). Duplicates are removed (first occurrence kept)."""
    items: list[str | AttackSpec]
    if isinstance(text, (str, AttackSpec)):
        items = [text]
    else:
        items = list(text)
    specs: list[AttackSpec] = []
    for item in items:
        if isinstance(item, AttackSpec):
            specs.append(item)
            continue
        for part in split_specs(item):
            if part.lower().startswith("suite:"):
                specs.extend(get_suite(part.split(":", 1)[1].strip()).specs())
            else:
                specs.append(parse_attack_spec(part))
    if not specs:
        raise SpecError("no attacks given")
    ov = parse_overrides(overrides)
    if ov:
        specs = [s.with_params(**ov[s.name]) if s.name in ov else s for s in specs]
    seen: set[str] = set()
    out: list[AttackSpec] = []
    for s in specs:
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out
