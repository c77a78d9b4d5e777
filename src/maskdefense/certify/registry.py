"""The certifier registry and spec syntax: ``ds:mode=column,band=4`` | ``pc:patch=5,k=6`` |
``grid:cell=8,rate=0.875`` -> a :class:`~maskdefense.certify.base.Certifier` around a base classifier.

``CERTIFIERS`` holds factories ``factory(base, **params)``; parameters use the spec value syntax
(:mod:`maskdefense.spec`) and are checked by the certifier (an unknown or bad one is a :class:`SpecError`).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..registry import Registry
from ..spec import SpecError
from .base import Certifier

__all__ = ["CERTIFIERS", "parse_certifier_spec", "build_certifier"]

CERTIFIERS: Registry[Certifier] = Registry("certifier")


def _ds(base: nn.Module, **params: Any) -> Certifier:
    from .derandomized import DerandomizedSmoothing

    return DerandomizedSmoothing(base, **params)


def _pc(base: nn.Module, **params: Any) -> Certifier:
    from .patchcleanser import PatchCleanser

    if "patch" not in params:
        raise SpecError("pc needs the patch size its mask set covers, e.g. pc:patch=5,k=6")
    return PatchCleanser(base, **params)


def _grid(base: nn.Module, **params: Any) -> Certifier:
    from .grid import GridCertifier

    if "cell" not in params or "rate" not in params:
        raise SpecError("grid needs cell and rate, e.g. grid:cell=8,rate=0.875")
    return GridCertifier(base, **params)


CERTIFIERS.add("ds", _ds, "derandomized smoothing: every column/row band or block ablation, softmax-threshold "
               "votes, certified iff n1 - n2 > 2 Delta (ds:mode=column,band=4[,threshold=0.2,fill=black])")
CERTIFIERS.add("pc", _pc, "double masking over an R-covering mask set, certified iff every two-mask prediction "
               "agrees (pc:patch=5,k=6 or pc:patch=5,stride=4)")
CERTIFIERS.add("grid", _grid, "majority vote over every grid mask removing round(rate * cells) cells, exact "
               "worst-case certificate (grid:cell=8,rate=0.875[,n_grad=64])")


def parse_certifier_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"ds:mode=column,band=4"`` -> ``("ds", {"mode": "column", "band": 4})``."""
    return CERTIFIERS.parse_spec(text)


def build_certifier(spec: str, base: nn.Module) -> Certifier:
    """The certifier ``spec`` around the (eval-mode) ``base`` classifier; a bad parameter is a SpecError."""
    name, params = parse_certifier_spec(spec)
    factory = CERTIFIERS.entry(name).factory
    try:
        inspect.signature(factory).bind(base, **params)
        return CERTIFIERS.create(name, base=base, **params)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError(f"certifier {name}: {e}") from None
