"""Attacks run through Foolbox 3.

Foolbox attacks keep Foolbox's defaults, read from the attack classes' signatures at import time (so
the recorded defaults are those of the installed Foolbox), except epsilon, which every spec sets. The
attack gets a :class:`foolbox.PyTorchModel` with bounds ``(0, 1)`` and the criterion
``Misclassification(y)``; we take Foolbox's *clipped* output (for minimum-norm attacks, the
perturbation restricted to the epsilon ball, as the MAD paper's epsilon columns imply; where CW's or
EAD's search found nothing, the clean image, not Foolbox's all-zero placeholder) and the harness
re-verifies it.

=================  ============================================  =============
spec name          Foolbox class                                 kind
=================  ============================================  =============
fgsm-l1/l2/linf    L1/L2/LinfFastGradientAttack                  fixed epsilon
bim-l1/l2/linf     L1/L2/LinfBasicIterativeAttack                fixed epsilon
pgd-l1/l2/linf     L1/L2/LinfProjectedGradientDescentAttack      fixed epsilon
cw-l2              L2CarliniWagnerAttack (kappa = confidence)    minimum norm
deepfool-l2/linf   L2/LinfDeepFoolAttack                         minimum norm
ead                EADAttack (beta = regularization, L1)         minimum norm
=================  ============================================  =============
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..base import AttackDef, ParamSpec, register_attack

__all__ = ["FOOLBOX_ATTACKS", "foolbox_version"]

# Types and bounds of Foolbox parameters, by name (defaults come from the installed library).
_FB_TYPES: dict[str, dict[str, Any]] = {
    "random_start": dict(type="bool"),
    "rel_stepsize": dict(type="float", minimum=0.0, exclusive=True),
    "abs_stepsize": dict(type="float", nullable=True, minimum=0.0, exclusive=True),
    "steps": dict(type="int", minimum=1, budget=True),
    "binary_search_steps": dict(type="int", minimum=1, budget=True),
    "stepsize": dict(type="float", minimum=0.0, exclusive=True),
    "confidence": dict(type="float", minimum=0.0),
    "initial_const": dict(type="float", minimum=0.0, exclusive=True),
    "abort_early": dict(type="bool"),
    "candidates": dict(type="int", nullable=True, minimum=2),
    "overshoot": dict(type="float", minimum=0.0),
    "loss": dict(type="str", choices=("logits", "crossentropy")),
    "initial_stepsize": dict(type="float", minimum=0.0, exclusive=True),
    "regularization": dict(type="float", minimum=0.0),
    "decision_rule": dict(type="str", choices=("EN", "L1")),
}

_EPS_FIXED = ParamSpec("eps", "float", required=True, minimum=0.0, doc="perturbation budget")
_EPS_MIN = ParamSpec("eps", "float", required=True, minimum=0.0, allow_inf=True,
                     doc="perturbation budget (the result is clipped to it; inf = unbounded)")


def foolbox_version() -> str:
    import foolbox

    return str(foolbox.__version__)


def _foolbox_params(cls: type) -> tuple[ParamSpec, ...]:
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in _FB_TYPES:  # pragma: no cover - a Foolbox upgrade added a parameter
            raise RuntimeError(f"unknown Foolbox parameter {cls.__name__}.{p.name}; add it to _FB_TYPES")
        default = p.default
        if isinstance(default, int) and not isinstance(default, bool) and _FB_TYPES[p.name]["type"] == "float":
            default = float(default)
        out.append(ParamSpec(p.name, default=default, **_FB_TYPES[p.name]))
    return tuple(out)


def _run_foolbox(d: AttackDef, params: Mapping[str, Any], model: nn.Module, x: Tensor, y: Tensor,
                 g: torch.Generator) -> Tensor:
    import foolbox as fb

    cls = getattr(fb.attacks, d.implementation.rsplit(".", 1)[1])
    kwargs = {k: v for k, v in params.items() if k != "eps"}
    attack = cls(**kwargs)
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    eps = float(params["eps"])
    raw, clipped, _ = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=eps)
    if d.kind == "minimization":
        # Foolbox's CW and EAD keep their best example in a tensor that starts all zeros, and return it as it is
        # where the search found no adversarial example: a black image (unbounded, a "valid" example that fools
        # most classifiers; bounded, the image darkened to the budget's edge), which is no attack. The attack
        # failed there: the clean image stands.
        found = raw.flatten(1).abs().amax(1) > 0
        clipped = torch.where(found.view(-1, *[1] * (x.dim() - 1)), clipped, x)
    return clipped


def _fb_resolve(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return params, {"library": f"foolbox {foolbox_version()}"}


FOOLBOX_ATTACKS: dict[str, tuple[str, str, str, str, str]] = {
    # name: (foolbox class, family, norm, kind, reference)
    "fgsm-l1": ("L1FastGradientAttack", "FGSM", "l1", "fixed-epsilon", "Goodfellow et al. 2015"),
    "fgsm-l2": ("L2FastGradientAttack", "FGSM", "l2", "fixed-epsilon", "Goodfellow et al. 2015 (FGM)"),
    "fgsm-linf": ("LinfFastGradientAttack", "FGSM", "linf", "fixed-epsilon", "Goodfellow et al. 2015"),
    "bim-l1": ("L1BasicIterativeAttack", "BIM", "l1", "fixed-epsilon", "Kurakin et al. 2017"),
    "bim-l2": ("L2BasicIterativeAttack", "BIM", "l2", "fixed-epsilon", "Kurakin et al. 2017"),
    "bim-linf": ("LinfBasicIterativeAttack", "BIM", "linf", "fixed-epsilon", "Kurakin et al. 2017"),
    "pgd-l1": ("L1ProjectedGradientDescentAttack", "PGD", "l1", "fixed-epsilon", "Madry et al. 2018"),
    "pgd-l2": ("L2ProjectedGradientDescentAttack", "PGD", "l2", "fixed-epsilon", "Madry et al. 2018"),
    "pgd-linf": ("LinfProjectedGradientDescentAttack", "PGD", "linf", "fixed-epsilon", "Madry et al. 2018"),
    "cw-l2": ("L2CarliniWagnerAttack", "CW", "l2", "minimization", "Carlini & Wagner 2017"),
    "deepfool-l2": ("L2DeepFoolAttack", "DeepFool", "l2", "minimization", "Moosavi-Dezfooli et al. 2016"),
    "deepfool-linf": ("LinfDeepFoolAttack", "DeepFool", "linf", "minimization", "Moosavi-Dezfooli et al. 2016"),
    "ead": ("EADAttack", "EAD", "l1", "minimization", "Chen et al. 2018"),
}

_ALIASES: dict[str, dict[str, str]] = {
    "cw-l2": {"kappa": "confidence"},
    "ead": {"kappa": "confidence", "beta": "regularization"},
}


def _import_foolbox() -> Any:
    import warnings

    with warnings.catch_warnings():  # Foolbox 3.3.4 imports a deprecated scipy namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    return foolbox


def _register_foolbox() -> None:
    fb = _import_foolbox()

    for name, (cls_name, family, norm, kind, ref) in FOOLBOX_ATTACKS.items():
        cls = getattr(fb.attacks, cls_name)
        eps = _EPS_MIN if kind == "minimization" else _EPS_FIXED
        doc = (cls.__doc__ or "").strip().splitlines()
        register_attack(AttackDef(
            name=name, family=family, norm=norm, backend="foolbox",
            implementation=f"foolbox.attacks.{cls_name}", kind=kind,
            params=(eps, *_foolbox_params(cls)), runner=_run_foolbox,
            description=f"{family} {norm.upper() if norm != 'linf' else 'Linf'} (Foolbox {cls_name})"
            + (f": {doc[0]}" if doc else ""),
            aliases=_ALIASES.get(name, {}), resolver=_fb_resolve,
            randomized=name.startswith("pgd-"), reference=ref,
        ))


_register_foolbox()
