"""The attack spec syntax.

One attack::

    name[:key=value,key=value,...]          e.g.  pgd-linf:eps=0.3,steps=40
                                                  cw-l2:eps=1.5,steps=1000,kappa=10
                                                  autoattack-rand:eps=8/255,norm=Linf

Several attacks are separated by ``;`` (or newlines); in such a list
(:func:`maskdefense.attacks.suites.parse_attacks`) ``suite:<name>`` expands to a named suite, e.g.
``suite:mad-table5-mnist`` (the 23 attack rows of MAD's Table 5 for MNIST). Values are parsed as
``true``/``false``, ``none``, integers, floats (``1e-3``, fractions ``8/255``, ``inf``) or strings.
Parameter names are checked against the attack's parameters (aliases such as ``kappa`` for
``confidence`` are accepted); resolving a spec fills in every default, so :attr:`AttackSpec.params` is
the complete set of parameters the attack runs with.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..spec import SpecError, format_value, parse_params, parse_value
from .base import AttackDef, attack_def

__all__ = [
    "AttackSpec", "SpecError", "parse_value", "parse_params", "parse_attack_spec", "resolve_spec",
    "format_value", "parse_overrides", "split_specs",
]

@dataclass(frozen=True)
class AttackSpec:
    """A fully resolved attack: registered name + every parameter it runs with.

    name : registered attack name (``"pgd-linf"``).
    params : all parameters, defaults filled in (what the result files record).
    given : the parameters the user set explicitly (for short labels).
    settings : library-internal settings that are not parameters but determine the attack
        (AutoAttack's sub-attacks, restarts, iterations), recorded for provenance.
    label : optional display label (a suite row such as ``"FGSM L1 eps=10"``).
    paper : optional reference numbers for this row (``{"attack": 0.4412, "defense": 0.6894}``).

    Equality and :attr:`key` depend on ``name`` and ``params`` only.
    """

    name: str
    params: Mapping[str, Any]
    given: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)
    label: str | None = field(default=None, compare=False)
    paper: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def definition(self) -> AttackDef:
        return attack_def(self.name)

    @property
    def key(self) -> str:
        """Canonical text with every parameter (sorted): identifies the attack in records."""
        return self.name + ":" + ",".join(f"{k}={format_value(self.params[k])}" for k in sorted(self.params))

    @property
    def text(self) -> str:
        """Short text with the explicitly given parameters, e.g. ``pgd-linf:eps=0.3``."""
        given = [k for k in self.params if k in self.given]
        return self.name + (":" + ",".join(f"{k}={format_value(self.params[k])}" for k in given) if given else "")

    @property
    def display(self) -> str:
        return self.label or self.text

    @property
    def eps(self) -> float:
        return float(self.params["eps"])

    @property
    def norm(self) -> str:
        d = self.definition
        if d.norm is not None:
            return d.norm
        return str(self.params["norm"]).lower()

    @property
    def family(self) -> str:
        return self.definition.family

    @property
    def kind(self) -> str:
        return self.definition.kind

    def with_params(self, **params: Any) -> "AttackSpec":
        """A new spec with some parameters changed (re-resolved, derived defaults recomputed)."""
        given = {k: self.params[k] for k in self.given}
        given.update(params)
        spec = resolve_spec(self.name, given)
        return AttackSpec(spec.name, spec.params, spec.given, spec.settings, self.label, self.paper)

    @property
    def budget(self) -> dict[str, int]:
        """The budget parameters and their values: the counts that buy strength with compute (iterations,
        restarts, binary-search steps, queries, the attack's own EOT samples)."""
        return {p.name: int(self.params[p.name]) for p in self.definition.params
                if p.budget and self.params.get(p.name) is not None}

    def with_budget(self, factor: int) -> "AttackSpec":
        """The same attack with every budget parameter multiplied by ``factor`` (step sizes that derive from
        the number of steps are derived again); labelled ``"<label> (budget xN)"``, without paper numbers."""
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise SpecError(f"budget factor must be a positive int, got {factor!r}")
        s = self.with_params(**{k: v * factor for k, v in self.budget.items()}) if self.budget else self
        return AttackSpec(s.name, s.params, s.given, s.settings, label=f"{self.display} (budget x{factor})")

    def to_dict(self) -> dict[str, Any]:
        d = self.definition
        out: dict[str, Any] = {
            "name": self.name, "key": self.key, "text": self.text, "label": self.display,
            "family": d.family, "norm": self.norm, "eps": self.eps, "kind": d.kind,
            "backend": d.backend, "implementation": d.implementation,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "given": list(self.given), "settings": dict(self.settings),
        }
        if self.paper is not None:
            out["paper"] = dict(self.paper)
        return out

    def __str__(self) -> str:
        return self.text

    def __hash__(self) -> int:
        return hash(self.key)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def resolve_spec(name: str, given: Mapping[str, Any], *, label: str | None = None,
                 paper: Mapping[str, Any] | None = None) -> AttackSpec:
    """Validate user parameters for attack ``name`` and fill in every default."""
    d = attack_def(name)
    names = d.param_names
    values: dict[str, Any] = {}
    order: list[str] = []
    for raw_key, v in given.items():
        k = str(raw_key).lower().replace("-", "_")
        k = d.aliases.get(k, k)
        if k not in names:
            close = difflib.get_close_matches(k, names + list(d.aliases), n=2)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise SpecError(f"{d.name}: unknown parameter {raw_key!r}.{hint} Parameters: {', '.join(names)}"
                            + (f" (aliases: {', '.join(f'{a}={t}' for a, t in d.aliases.items())})" if d.aliases else ""))
        if k in values:
            raise SpecError(f"{d.name}: parameter {k!r} given twice (through an alias?)")
        values[k] = d.param(k).coerce(v, d.name)
        order.append(k)
    params: dict[str, Any] = {}
    for p in d.params:
        if p.name in values:
            params[p.name] = values[p.name]
        elif p.required:
            raise SpecError(f"{d.name}: missing required parameter {p.name!r} (e.g. {d.name}:{p.name}=...)")
        else:
            params[p.name] = p.default
    if math.isinf(params["eps"]) and d.kind != "minimization":
        raise SpecError(f"{d.name}: eps=inf is only allowed for minimum-norm attacks (cw-l2, deepfool-*, ead)")
    settings: dict[str, Any] = {}
    if d.resolver is not None:
        params, settings = d.resolver(dict(params))
    return AttackSpec(d.name, params, tuple(order), settings, label, paper)


def parse_attack_spec(text: str) -> AttackSpec:
    """Parse and resolve one attack spec, e.g. ``"pgd-linf:eps=0.01,steps=40"``."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty attack spec")
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name == "suite":
        raise SpecError(f"{text!r} is a suite; use parse_attacks() to expand it")
    attack_def(name)  # UnknownNameError with suggestions
    return resolve_spec(name, parse_params(rest, what=name))


def parse_overrides(text: str | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``"cw-l2:steps=100;ead:steps=100"`` -> ``{"cw-l2": {"steps": 100}, "ead": {"steps": 100}}``."""
    if text is None:
        return {}
    raw: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(text, Mapping):
        raw = [(k, v) for k, v in text.items()]
    else:
        for part in split_specs(text):
            name, _, rest = part.partition(":")
            raw.append((name.strip(), parse_params(rest, what=f"override {name.strip()}")))
    out: dict[str, dict[str, Any]] = {}
    for name, params in raw:
        d = attack_def(name)
        checked = out.setdefault(d.name, {})
        for k, v in params.items():
            key = d.aliases.get(str(k).lower(), str(k).lower())
            if key not in d.param_names:
                raise SpecError(f"override {d.name}: unknown parameter {k!r}; parameters: {', '.join(d.param_names)}")
            checked[key] = d.param(key).coerce(v, d.name)
    return out


def split_specs(text: str) -> list[str]:
    """``"a:x=1; b"`` -> ``["a:x=1", "b"]``: the specs of a list, separated by ``;`` or newlines."""
    return [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]
