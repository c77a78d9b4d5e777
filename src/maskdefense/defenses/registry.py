"""The defense registry and spec syntax: ``none`` or ``mad:cell=7,rate=0.75,n=5`` -> a :class:`~maskdefense.defenses.base.Defense`.

``DEFENSES`` is a registry of factories ``factory(base, **params) -> Defense``; register more with
``DEFENSES.add("remix", make_remix, "REMIX ...")``. Parameters are parsed with the attack spec value
syntax (:func:`maskdefense.attacks.parse_params`) and passed as keyword arguments; the factory
validates them (a ``TypeError`` for an unknown keyword becomes a :class:`SpecError`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..spec import SpecError, parse_params
from .base import Defense, NoDefense
from ..registry import Registry

__all__ = ["DEFENSES", "parse_defense_spec", "build_defense", "create_defense", "list_defenses"]

DEFENSES: Registry[Defense] = Registry("defense")


def _none(base: nn.Module) -> Defense:
    return NoDefense(base)


def _mad(base: nn.Module, **params: Any) -> Defense:
    from .mad import MADClassifier

    if "cell" not in params or "rate" not in params:
        raise SpecError("mad needs cell and rate, e.g. mad:cell=7,rate=0.75 (MNIST) or mad:cell=4,rate=0.75 (CIFAR-10)")
    return MADClassifier(base, **params)


DEFENSES.add("none", _none, "the undefended model")
DEFENSES.add("mad", _mad, "MAD: random grid masking + majority vote (mad:cell=..,rate=..,n=..,n_grad=..,fill=..)")


def parse_defense_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"mad:cell=7,rate=0.75"`` -> ``("mad", {"cell": 7, "rate": 0.75})``."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty defense spec")
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    DEFENSES.entry(name)  # UnknownNameError with suggestions
    return name, parse_params(rest, what=f"defense {name}")


def build_defense(spec: str, base: nn.Module) -> Defense:
    """Build the defense ``spec`` around the (undefended, eval-mode) ``base`` model."""
    name, params = parse_defense_spec(spec)
    factory: Callable[..., Defense] = DEFENSES.entry(name).factory
    try:
        inspect.signature(factory).bind(base, **params)
    except TypeError as e:
        raise SpecError(f"defense {name}: {e}") from None
    try:
        return DEFENSES.create(name, base=base, **params)
    except TypeError as e:
        raise SpecError(f"defense {name}: {e}") from None
    except ValueError as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"defense {name}: {e}") from None


def create_defense(spec: str, base: nn.Module) -> Defense:
    """timm-style alias of :func:`build_defense`: ``create_defense("mad:cell=7,rate=0.75", model)``."""
    return build_defense(spec, base)


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.list(pattern)
