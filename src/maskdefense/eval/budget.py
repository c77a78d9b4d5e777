"""Is an attack's budget enough? Run it again with the budget doubled and compare.

A robustness number is only as good as the attack behind it: an attack stopped early (a shortened
Carlini-Wagner, too few PGD steps, too few EOT samples against a randomized defense) overstates robustness.
The check: the same attacks on the same images with every budget parameter multiplied by ``factor``
(:meth:`~maskdefense.attacks.spec.AttackSpec.with_budget`: iterations, restarts, binary-search steps,
queries, an attack's own EOT samples) and, against a randomized defense under the adaptive threat, the
harness's EOT samples multiplied too. The budget is *enough* when the reported number (the defense's
accuracy on the attacked, correctly classified images) moves by no more than its own noise, one binomial
standard error ``sqrt(p (1 - p) / n)`` (at least one image, ``1 / n``); otherwise the flag
``BUDGET_NOT_ENOUGH`` says which row moved and by how much.

Attacks without budget parameters (FGSM) are rerun only where something else doubles: under the adaptive
threat against a randomized defense (the EOT samples).

Against a randomized defense the adaptive recheck doubles steps *and* EOT samples, four times the attack's
cost; a study may recheck adaptively only the attacks that set each norm's worst case
(:func:`worst_per_norm`: the numbers it reports as the defense's robustness), the others under the other
threats only, and say so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..attacks import AttackSpec
from ..attacks.suites import parse_attacks
from .checks import Flag
from .harness import Report, evaluate
from .threat import ThreatModel, parse_threats

__all__ = ["strongest_per_attack", "worst_per_norm", "compare_budgets", "check_budget", "budget_check",
           "BUDGET_FACTOR"]

#: How much more budget the check spends (the brief of this field: doubling).
BUDGET_FACTOR = 2


def strongest_per_attack(specs: Iterable[AttackSpec]) -> list[AttackSpec]:
    """One row per attack (registered name): the one with the largest epsilon, in the specs' order."""
    best: dict[str, AttackSpec] = {}
    for s in specs:
        if s.name not in best or s.eps > best[s.name].eps:
            best[s.name] = s
    return list(best.values())


def worst_per_norm(rows: Iterable[Mapping[str, Any]], threat: str = "adaptive",
                   metric: str = "defense_acc") -> set[str]:
    """The attack keys that set each norm's worst case under ``threat``: per norm (and epsilon), the row with
    the lowest ``metric`` (the first on ties), sanity attacks left out."""
    worst: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for r in rows:
        if r["threat"] != threat or r.get("sanity") or r.get(metric) is None:
            continue
        k = (r["norm"], r["eps"])
        if k not in worst or r[metric] < worst[k][metric]:
            worst[k] = r
    return {r["attack"] for r in worst.values()}


def _noise(p: float, n: int) -> float:
    return max(math.sqrt(max(p * (1.0 - p), 0.0) / n), 1.0 / n) if n > 0 else float("nan")


def compare_budgets(base: Sequence[Mapping[str, Any]], scaled: Sequence[Mapping[str, Any]],
                    pairs: Mapping[str, AttackSpec], *, factor: int,
                    metric: str = "defense_acc") -> list[dict[str, Any]]:
    """Pair each scaled row with its base row (``pairs``: scaled spec key -> base spec, same threat) and
    measure the move of ``metric``.

    Returns one dict per pair: threat, label, the budgets and samples per gradient of both, base and scaled
    values, ``delta`` (scaled - base), ``noise`` (one binomial standard error of the base value over its
    ``n_correct`` images, at least 1 / n) and ``enough`` (``|delta| <= noise``).
    """
    by_key = {(r["threat"], r["attack"]): r for r in base}
    out = []
    for r2 in scaled:
        spec = pairs.get(r2["attack"])
        r1 = by_key.get((r2["threat"], spec.key)) if spec is not None else None
        if r1 is None or r1.get(metric) is None or r2.get(metric) is None:
            continue
        n = int(r1.get("n_correct") or 0)
        delta = float(r2[metric]) - float(r1[metric])
        noise = _noise(float(r1[metric]), n)
        out.append({
            "threat": r2["threat"], "label": r1["label"], "attack": spec.key, "attack_scaled": r2["attack"],
            "factor": factor, "budget": spec.budget, "budget_scaled": spec.with_budget(factor).budget,
            "samples_per_gradient": [r1.get("samples_per_gradient"), r2.get("samples_per_gradient")],
            "metric": metric, "n_correct": n, "base": float(r1[metric]), "scaled": float(r2[metric]),
            "delta": round(delta, 6), "noise": round(noise, 6), "enough": abs(delta) <= noise + 1e-12,
            "robust_base": r1.get("robust_acc"), "robust_scaled": r2.get("robust_acc"),
        })
    return out


def check_budget(comparisons: Iterable[Mapping[str, Any]]) -> list[Flag]:
    """``BUDGET_NOT_ENOUGH`` for every row that moved by more than its noise when the budget grew."""
    flags = []
    for c in comparisons:
        if c["enough"]:
            continue
        way = "lower" if c["delta"] < 0 else "higher"
        flags.append(Flag(
            "BUDGET_NOT_ENOUGH", "warning",
            f"{c['label']} ({c['threat']}): with x{c['factor']} budget the {c['metric']} is {way} by "
            f"{abs(c['delta']):.2%} ({c['base']:.2%} -> {c['scaled']:.2%}), more than its noise "
            f"{c['noise']:.2%} on {c['n_correct']} images: the reported number depends on the budget",
            c["threat"], c["attack"]))
    return flags


def budget_check(defense: Any, data: Any, base: Report, specs: Iterable[str | AttackSpec], *,
                 out_dir: str | Path, factor: int = BUDGET_FACTOR,
                 attack_overrides: str | Mapping[str, Mapping[str, Any]] | None = None,
                 adaptive_keys: Iterable[str] | None = None,
                 **common: Any) -> tuple[list[dict[str, Any]], list[Flag]]:
    """Rerun ``specs`` (some of the ``base`` run's attacks, e.g. :func:`strongest_per_attack`; with the
    base run's ``attack_overrides``) with ``factor`` times the budget on the same ``data``, under the base
    run's threats and EOT samples times ``factor``, and compare with the base rows.

    ``common``: the other keyword arguments of :func:`~maskdefense.eval.evaluate` the base run used
    (surrogate, seed, batch_size, metadata). Writes ``out_dir/budget-x<factor>`` (attacks with budget
    parameters, every threat) and, against a randomized defense attacked adaptively,
    ``out_dir/budget-x<factor>-eot`` (the others, adaptive threat only); both resume.
    ``adaptive_keys`` (base spec keys, e.g. :func:`worst_per_norm`): only these attacks are rechecked under
    the adaptive threat (``out_dir/budget-x<factor>-adaptive``), the others under the other threats
    (``out_dir/budget-x<factor>``).
    Returns the comparisons and the flags (the reruns' own and ``BUDGET_NOT_ENOUGH``).
    """
    for k in ("eot_samples", "sanity"):  # set here: the base run's EOT samples times factor, no sanity attack
        common.pop(k, None)
    chosen = parse_attacks(list(specs), overrides=attack_overrides)
    threats = parse_threats(base.threats)
    eot0 = int(base.config.get("eot_samples", 1))
    randomized = bool(base.config.get("contract", {}).get("randomized"))
    adaptive = ThreatModel.WHITE_BOX_ADAPTIVE in threats and randomized
    scaled = {s.key: s.with_budget(factor) for s in chosen}
    if adaptive_keys is None:
        groups = [([s for s in chosen if s.budget], threats, ""),
                  ([s for s in chosen if not s.budget] if adaptive else [], [ThreatModel.WHITE_BOX_ADAPTIVE], "-eot")]
    else:
        keys = set(adaptive_keys)
        others = [t for t in threats if t is not ThreatModel.WHITE_BOX_ADAPTIVE]
        again = [s for s in chosen if s.key in keys and (s.budget or adaptive)]
        groups = [([s for s in chosen if s.budget] if others else [], others, ""),
                  (again if ThreatModel.WHITE_BOX_ADAPTIVE in threats else [], [ThreatModel.WHITE_BOX_ADAPTIVE],
                   "-adaptive")]
    rows: list[dict[str, Any]] = []
    flags: list[Flag] = []
    for group, group_threats, suffix in groups:
        if not group:
            continue
        rep = evaluate(defense, data, [scaled[s.key] for s in group], [t.value for t in group_threats],
                       out_dir=Path(out_dir) / f"budget-x{factor}{suffix}", eot_samples=eot0 * factor,
                       sanity=None, **common)
        rows += rep.rows
        flags += [f for f in rep.flags if f.code != "GRAY_BOX_ONLY"]
    comparisons = compare_budgets(base.rows, rows, {scaled[s.key].key: s for s in chosen}, factor=factor)
    return comparisons, flags + check_budget(comparisons)
