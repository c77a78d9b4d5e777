"""The spec value syntax shared by attacks, defenses and tasks: ``name:key=value,key=value``.

Values are parsed as ``true``/``false``, ``none``, integers, floats (``1e-3``, fractions ``8/255``,
``inf``) or strings; keys are lower-cased with ``-`` read as ``_``. :class:`SpecError` is the one error
for a malformed spec anywhere in the library.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["SpecError", "parse_value", "format_value", "parse_params"]


class SpecError(ValueError):
    """A malformed attack/defense/task spec: unknown parameter, bad value, missing epsilon, bad syntax."""


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse one spec value: bool, None, int, float (also ``a/b`` and ``inf``) or string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if low in ("inf", "+inf", "infinity"):
        return math.inf
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    if "/" in t:
        a, _, b = t.partition("/")
        if (_INT.match(a.strip()) or _FLOAT.match(a.strip())) and (_INT.match(b.strip()) or _FLOAT.match(b.strip())):
            den = float(b)
            if den == 0:
                raise SpecError(f"division by zero in value {text!r}")
            return float(a) / den
    if not t:
        raise SpecError("empty value")
    return t


def format_value(v: Any) -> str:
    """Canonical text of a parameter value (inverse of :func:`parse_value` for canonical values)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else repr(v)
    return str(v)


def parse_params(text: str, what: str = "spec") -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (keys lower-cased, duplicates refused)."""
    out: dict[str, Any] = {}
    text = text.strip()
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise SpecError(f"{what}: empty parameter (stray comma?) in {text!r}")
        if "=" not in item:
            raise SpecError(f"{what}: expected key=value, got {item!r}")
        k, _, v = item.partition("=")
        k = k.strip().lower().replace("-", "_")
        if not k:
            raise SpecError(f"{what}: missing parameter name in {item!r}")
        if k in out:
            raise SpecError(f"{what}: parameter {k!r} given twice")
        try:
            out[k] = parse_value(v)
        except SpecError as e:
            raise SpecError(f"{what}: parameter {k!r}: {e}") from None
    return out
