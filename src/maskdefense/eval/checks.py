"""Integrity checks of an evaluation, raised as flags in the report.

In the spirit of AutoAttack's ``checks.py`` and of Carlini et al. 2019 / Tramer et al. 2020: each check
looks for a known way a robustness number can be wrong. The measurements (gradients, outputs,
randomness) are taken by the harness during the run and stored as records; the flags are computed from
those records and the summary rows only, so a resumed run raises exactly the same flags.

=================================  =======  ===========================================================
code                               level    trigger
=================================  =======  ===========================================================
RANDOMIZED_WITHOUT_EOT             error    adaptive attack on a randomized defense with <= 1 random
                                            sample per gradient
AUTOATTACK_STANDARD_ON_RANDOMIZED  warning  AutoAttack ``standard`` used adaptively on a randomized
                                            defense (AutoAttack's advice: use ``rand``)
GRAY_BOX_ONLY                      warning  a defense evaluated without any adaptive (white-box) attack:
                                            the numbers are not white-box robustness
NON_DIFFERENTIABLE_WITHOUT_BPDA    error    adaptive attack on a defense whose contract names
                                            non-differentiable steps without BPDA
UNDECLARED_RANDOMNESS              warning  outputs change between calls but the defense says it is
                                            deterministic
ZERO_OR_NONFINITE_GRADIENTS        warn/err more than ``grad_frac`` of sampled inputs have an all-zero
                                            input gradient, or any has NaN/inf gradients
PROBABILITIES_AS_LOGITS            error    model outputs look like probabilities (in [0, 1], rows sum
                                            to 1) where attacks expect logits
TRANSFER_STRONGER_THAN_ADAPTIVE    error    a gray-box or black-box attack leaves lower robust accuracy
                                            than the adaptive white-box attack (gradient masking)
GRADIENT_FREE_BEATS_GRADIENT       error    a gradient-free attack (Square) leaves lower robust accuracy
                                            than every gradient attack of the same threat, norm and eps
                                            (gradient masking likely)
LARGE_EPS_NOT_ZERO                 error    accuracy clearly above 0 under a white-box attack with a very
                                            large budget (Linf >= 0.5, L2 >= 0.5 sqrt(d), L1 >= 0.5 d)
PERTURBATION_EXCEEDS_EPS           error    an attack returned examples outside its epsilon ball (counted
                                            as failed attacks)
PIXEL_OUT_OF_RANGE                 error    an attack returned pixels outside [0, 1] or non-finite
                                            values (counted as failed attacks)
INCOMPLETE                         error    some (example, attack) records are missing
BUDGET_NOT_ENOUGH                  warning  the attack again with twice its budget moves the number by
                                            more than its noise (raised by :mod:`maskdefense.eval.budget`)
=================================  =======  ===========================================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..defenses.base import Contract

__all__ = [
    "Flag", "SEVERITIES", "gradient_stats", "output_stats", "looks_like_probabilities", "is_large_eps",
    "check_eot", "check_gray_box_only", "check_bpda", "check_randomness", "check_gradients",
    "check_outputs", "check_transfer_vs_adaptive", "check_gradient_free", "check_large_eps",
    "check_violations", "check_complete", "run_checks",
]

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Flag:
    """One integrity finding: ``code`` (stable identifier), ``severity``, human ``message``, and the
    threat model / attack it concerns (if any)."""

    code: str
    severity: str
    message: str
    threat: str | None = None
    attack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# measurements (taken by the harness, stored as records)


def gradient_stats(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Fraction of inputs whose cross-entropy input gradient is all zero / has non-finite values."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(xg)
    g = grad.detach().flatten(1)
    finite = torch.isfinite(g).all(1)
    zero = finite & (g.abs().sum(1) == 0)
    n = int(g.shape[0])
    return {"n": n, "zero": int(zero.sum()), "nonfinite": int((~finite).sum()),
            "frac_zero": float(zero.float().mean()) if n else 0.0,
            "frac_nonfinite": float((~finite).float().mean()) if n else 0.0}


def looks_like_probabilities(out: Tensor, alpha: float = 1e-5) -> bool:
    """AutoAttack's test: all outputs in [0, 1] and every row sums to 1 (within ``alpha``)."""
    if out.numel() == 0:
        return False
    out = out.detach().double()
    return bool(out.max() < 1 + alpha and out.min() > -alpha and ((out.sum(-1) - 1).abs() < alpha).all())


def output_stats(out: Tensor, alpha: float = 1e-5) -> dict[str, Any]:
    o = out.detach().double()
    return {"min": float(o.min()), "max": float(o.max()),
            "max_row_sum_dev": float((o.sum(-1) - 1).abs().max()),
            "probabilities": looks_like_probabilities(out, alpha)}


def is_large_eps(norm: str, eps: float, dim: int) -> bool:
    """A budget large enough that no classifier should keep accuracy under a white-box attack."""
    if norm == "linf":
        return eps >= 0.5
    if norm == "l2":
        return eps >= 0.5 * math.sqrt(dim)
    if norm == "l1":
        return eps >= 0.5 * dim
    return False


# ----------------------------------------------------------------------------------------------
# checks (pure functions of rows / measurements / configuration)


def check_eot(rows: Iterable[Mapping[str, Any]], randomized: bool) -> list[Flag]:
    if not randomized:
        return []
    flags = []
    for r in rows:
        if r["threat"] != "adaptive":
            continue
        if r.get("samples_per_gradient", 1) <= 1:
            flags.append(Flag("RANDOMIZED_WITHOUT_EOT", "error",
                              f"{r['label']}: the defense is randomized but the adaptive attack used "
                              f"{r.get('samples_per_gradient', 1)} random sample per gradient; use EOT "
                              "(--eot K) or an attack with its own EOT (autoattack-rand)",
                              "adaptive", r["attack"]))
        if r.get("name") == "autoattack-standard":
            flags.append(Flag("AUTOATTACK_STANDARD_ON_RANDOMIZED", "warning",
                              f"{r['label']}: AutoAttack 'standard' on a randomized defense; AutoAttack "
                              "recommends version 'rand' (autoattack-rand)", "adaptive", r["attack"]))
    return flags


def check_gray_box_only(threats: Sequence[str], defense_name: str) -> list[Flag]:
    if defense_name == "none" or "adaptive" in threats:
        return []
    return [Flag("GRAY_BOX_ONLY", "warning",
                 f"the defense was evaluated only under {', '.join(threats)}: these numbers are not "
                 "white-box robustness; add the adaptive threat model (--threat adaptive)")]


def check_bpda(threats: Sequence[str], contract: Contract) -> list[Flag]:
    missing = contract.missing_bpda
    if "adaptive" in threats and missing:
        return [Flag("NON_DIFFERENTIABLE_WITHOUT_BPDA", "error",
                     f"the defense declares non-differentiable steps without BPDA ({', '.join(missing)}); "
                     "gradients through them are meaningless (pass them through maskdefense.ops.bpda and name "
                     "them in the contract's bpda_steps)", "adaptive")]
    return []


def check_randomness(declared: bool, observed: bool) -> list[Flag]:
    if observed and not declared:
        return [Flag("UNDECLARED_RANDOMNESS", "warning",
                     "the defense's outputs change between calls on the same input but its contract declares "
                     "it deterministic (randomized=False); it is evaluated without EOT")]
    return []


def check_gradients(stats: Mapping[str, Mapping[str, Any]], threshold: float = 0.1) -> list[Flag]:
    """``stats``: threat -> :func:`gradient_stats` of that threat's target."""
    flags = []
    for threat, s in stats.items():
        if s["n"] == 0:
            continue
        if s["nonfinite"] > 0:
            flags.append(Flag("ZERO_OR_NONFINITE_GRADIENTS", "error",
                              f"{s['nonfinite']}/{s['n']} sampled inputs have NaN/inf input gradients "
                              f"through the {threat} target", threat))
        if s["frac_zero"] > threshold:
            sev = "error" if s["frac_zero"] >= 0.5 else "warning"
            flags.append(Flag("ZERO_OR_NONFINITE_GRADIENTS", sev,
                              f"{s['zero']}/{s['n']} sampled inputs have an all-zero input gradient through "
                              f"the {threat} target (gradient masking or saturated softmax; gradient attacks "
                              "are unreliable there)", threat))
    return flags


def check_outputs(stats: Mapping[str, Mapping[str, Any]]) -> list[Flag]:
    """``stats``: model name -> :func:`output_stats`."""
    return [Flag("PROBABILITIES_AS_LOGITS", "error",
                 f"the outputs of the {name} look like probabilities (all in [0, 1], rows sum to 1); "
                 "attacks and losses expect logits", None if name == "base" else name.split(":")[-1])
            for name, s in stats.items() if s.get("probabilities")]


def _tol(p: float, n: int, tol: float | None) -> float:
    if tol is not None:
        return tol
    return max(0.01, 2.0 * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1)))


def check_transfer_vs_adaptive(rows: Sequence[Mapping[str, Any]], tol: float | None = None) -> list[Flag]:
    """Same attack, lower robust accuracy under a transfer threat than under the adaptive one."""
    adaptive = {r["attack"]: r for r in rows if r["threat"] == "adaptive" and r.get("robust_acc") is not None}
    flags = []
    for r in rows:
        if r["threat"] == "adaptive" or r["attack"] not in adaptive or r.get("robust_acc") is None:
            continue
        a = adaptive[r["attack"]]
        t = _tol(a["robust_acc"], a["n"], tol)
        if r["robust_acc"] < a["robust_acc"] - t:
            flags.append(Flag("TRANSFER_STRONGER_THAN_ADAPTIVE", "error",
                              f"{r['label']}: the {r['threat']} attack leaves robust accuracy "
                              f"{r['robust_acc']:.2%}, below the adaptive white-box attack's "
                              f"{a['robust_acc']:.2%} (tolerance {t:.2%}): the white-box attack is weakened, "
                              "probably by gradient masking", r["threat"], r["attack"]))
    trans = [r for r in rows if r["threat"] != "adaptive" and r.get("robust_acc") is not None]
    if adaptive and trans:
        best_a = min(adaptive.values(), key=lambda r: r["robust_acc"])
        best_t = min(trans, key=lambda r: r["robust_acc"])
        t = _tol(best_a["robust_acc"], best_a["n"], tol)
        if best_t["robust_acc"] < best_a["robust_acc"] - t and best_t["attack"] not in adaptive:
            flags.append(Flag("TRANSFER_STRONGER_THAN_ADAPTIVE", "error",
                              f"the strongest {best_t['threat']} attack ({best_t['label']}: "
                              f"{best_t['robust_acc']:.2%}) beats the strongest adaptive attack "
                              f"({best_a['label']}: {best_a['robust_acc']:.2%})", best_t["threat"], best_t["attack"]))
    return flags


def _gradient_free(name: str) -> bool | None:
    """Whether the registered attack ``name`` is gradient-free (``None``: not a registered attack)."""
    from ..attacks import attack_def
    from ..registry import UnknownNameError

    try:
        return attack_def(name).gradient_free
    except UnknownNameError:
        return None


def check_gradient_free(rows: Sequence[Mapping[str, Any]], tol: float | None = None) -> list[Flag]:
    """A gradient-free attack (``AttackDef.gradient_free``: Square) leaves lower robust accuracy than every
    gradient attack of the same threat model, norm and epsilon, beyond the sampling noise: the gradients
    mislead the gradient attacks, i.e. gradient masking is likely. Rows of unregistered attacks are
    left out."""
    kinds = {r["name"]: _gradient_free(r["name"]) for r in rows}
    flags = []
    for r in rows:
        if not kinds[r["name"]] or r.get("robust_acc") is None:
            continue
        grads = [g for g in rows if kinds[g["name"]] is False and g.get("robust_acc") is not None
                 and (g["threat"], g["norm"], g["eps"]) == (r["threat"], r["norm"], r["eps"])]
        if not grads:
            continue
        best = min(grads, key=lambda g: g["robust_acc"])
        t = _tol(best["robust_acc"], best["n"], tol)
        if r["robust_acc"] < best["robust_acc"] - t:
            flags.append(Flag("GRADIENT_FREE_BEATS_GRADIENT", "error",
                              f"{r['label']}: the gradient-free attack leaves robust accuracy {r['robust_acc']:.2%}, "
                              f"below every gradient attack at {r['norm']} eps={r['eps']:g} (best: {best['label']}, "
                              f"{best['robust_acc']:.2%}; tolerance {t:.2%}): gradient masking likely, the "
                              "gradient attacks' numbers overstate robustness", r["threat"], r["attack"]))
    return flags


def check_large_eps(rows: Iterable[Mapping[str, Any]], dim: int, defense_name: str,
                    max_acc: float = 0.1) -> list[Flag]:
    flags = []
    for r in rows:
        white = r["threat"] == "adaptive" or (r["threat"] == "gray-box" and defense_name == "none")
        if not white or r.get("robust_acc") is None or not is_large_eps(r["norm"], r["eps"], dim):
            continue
        if r["robust_acc"] > max_acc:
            flags.append(Flag("LARGE_EPS_NOT_ZERO", "error",
                              f"{r['label']}: robust accuracy {r['robust_acc']:.2%} at a budget that should "
                              f"break any classifier ({r['norm']} eps={r['eps']:g}); the attack is not working "
                              "(gradient masking, too few steps, or a bug)", r["threat"], r["attack"]))
    return flags


def check_violations(rows: Iterable[Mapping[str, Any]]) -> list[Flag]:
    flags = []
    for r in rows:
        if r.get("n_eps_violations"):
            mx = r.get("max_norm")
            detail = f" (largest {r['norm']} norm {mx:.6g})" if isinstance(mx, (int, float)) else " (non-finite)"
            flags.append(Flag("PERTURBATION_EXCEEDS_EPS", "error",
                              f"{r['label']}: {r['n_eps_violations']} of {r['n']} adversarial examples exceed "
                              f"{r['norm']} eps={r['eps']:g}{detail}; counted as failed attacks",
                              r["threat"], r["attack"]))
        if r.get("n_range_violations"):
            flags.append(Flag("PIXEL_OUT_OF_RANGE", "error",
                              f"{r['label']}: {r['n_range_violations']} of {r['n']} adversarial examples have "
                              "pixels outside [0, 1] or non-finite values; counted as failed attacks",
                              r["threat"], r["attack"]))
    return flags


def check_complete(rows: Iterable[Mapping[str, Any]], n: int) -> list[Flag]:
    return [Flag("INCOMPLETE", "error", f"{r['label']}: records for {r['n']} of {n} examples", r["threat"], r["attack"])
            for r in rows if r["n"] != n]


def run_checks(
    rows: Sequence[Mapping[str, Any]],
    diagnostics: Mapping[str, Mapping[str, Any]],
    *,
    threats: Sequence[str],
    defense_name: str,
    contract: Contract,
    dim: int,
    n: int,
    grad_frac: float = 0.1,
    transfer_tol: float | None = None,
    large_eps_max_acc: float = 0.1,
) -> list[Flag]:
    """All checks; ``diagnostics`` maps ``"gradients:<threat>"``, ``"outputs:<model>"`` and
    ``"randomness"`` to the measurements recorded by the harness; ``contract`` is the defense's declared
    :class:`~maskdefense.defenses.base.Contract`."""
    grads = {k.split(":", 1)[1]: v for k, v in diagnostics.items() if k.startswith("gradients:")}
    outs = {k.split(":", 1)[1]: v for k, v in diagnostics.items() if k.startswith("outputs:")}
    rnd = diagnostics.get("randomness", {})
    flags: list[Flag] = []
    flags += check_complete(rows, n)
    flags += check_violations(rows)
    flags += check_outputs(outs)
    flags += check_eot(rows, contract.randomized)
    flags += check_gray_box_only(threats, defense_name)
    flags += check_bpda(threats, contract)
    flags += check_randomness(contract.randomized, bool(rnd.get("observed", False)))
    flags += check_gradients(grads, grad_frac)
    flags += check_transfer_vs_adaptive(rows, transfer_tol)
    flags += check_gradient_free(rows, transfer_tol)
    flags += check_large_eps(rows, dim, defense_name, large_eps_max_acc)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(flags, key=lambda f: order.get(f.severity, 9))
