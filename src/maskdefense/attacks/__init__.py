"""Adversarial attacks behind one registry and one spec syntax.

>>> from maskdefense.attacks import parse_attacks, run_attack, list_attacks
>>> specs = parse_attacks("pgd-linf:eps=0.3;cw-l2:eps=1.5,steps=100")
>>> specs[0].params            # every parameter, Foolbox's defaults filled in
>>> x_adv = run_attack(specs[0], model, x, y, generator=torch.Generator().manual_seed(0))
>>> parse_attacks("suite:mad-table5-mnist")   # the 23 attack rows of MAD's Table 5 (MNIST)

Attacks come from Foolbox 3 (FGSM/FGM, BIM, PGD in L1/L2/Linf, CW-L2, DeepFool L2/Linf, EAD) and
AutoAttack (``pyautoattack``: the ``standard`` and ``rand`` ensembles; APGD-CE and APGD-DLR on their
own, with ``eot_iter`` for randomized defenses; the gradient-free Square attack, which catches gradient
masking); MI-FGSM and diverse-input variants are ours (:mod:`maskdefense.attacks.backends.momentum`,
tested against Foolbox). Adaptive-attack wrappers: :class:`EOT`, :class:`BPDA`,
:class:`DiverseInputModel`. Attacks return raw examples; :mod:`maskdefense.eval` verifies them and
decides success.

Modules, each importing only those before it: ``base`` (definitions, the registry of definitions),
``spec`` (one spec: parse, resolve), ``suites`` (named suites, attack lists), ``run`` (running; the
callable :class:`Attack` and ``ATTACKS``); ``backends`` register their definitions with ``base``.
"""

from __future__ import annotations

from .base import NORMS, AttackDef, ParamSpec, SpecError, attack_def, list_attacks, register_attack
from .backends.momentum import diverse_input, mi_fgsm  # ours (registers MI-FGSM / DI); the other backends load
# at the first lookup of an attack (entry-point group maskdefense.attacks), so this import stays light
from .run import ATTACKS, Attack, run_attack, seed_from_generator
from .spec import (
    AttackSpec, format_value, parse_attack_spec, parse_overrides, parse_params, parse_value, resolve_spec,
)
from .suites import SUITES, Suite, SuiteRow, get_suite, list_suites, parse_attacks
from ..ops.bpda import BPDA, bpda
from ..ops.eot import EOT
from .wrappers import DiverseInputModel

__all__ = [
    "ATTACKS", "NORMS", "Attack", "AttackDef", "ParamSpec", "SpecError", "attack_def", "list_attacks",
    "register_attack", "AttackSpec", "parse_attack_spec", "parse_attacks", "parse_overrides", "parse_params",
    "parse_value", "format_value", "resolve_spec", "run_attack", "seed_from_generator", "mi_fgsm",
    "diverse_input", "SUITES", "Suite", "SuiteRow", "get_suite", "list_suites", "EOT", "BPDA", "bpda",
    "DiverseInputModel",
]
