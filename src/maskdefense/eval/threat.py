"""Threat models as data, and the model each one attacks.

============  ==========================================================================================
gray-box      (= oblivious) adversarial examples made against the *base* network, without the defense's
              masking or preprocessing -- the MAD paper's setting.
black-box     transfer: made against an independently trained *surrogate* model.
adaptive      white-box: made against the *whole defense* end to end, with EOT over its randomness
              (a stated number of samples per gradient) and BPDA through non-differentiable steps
              (Athalye et al. 2018; Tramer et al. 2020).
============  ==========================================================================================
"""

from __future__ import annotations

import enum
from typing import Any, Iterable

from torch import nn

from ..ops.eot import EOT

__all__ = ["ThreatModel", "parse_threats", "make_target", "samples_per_gradient"]


class ThreatModel(str, enum.Enum):
    GRAY_BOX = "gray-box"
    BLACK_BOX = "black-box"
    WHITE_BOX_ADAPTIVE = "adaptive"

    def __str__(self) -> str:
        return self.value

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def parse(cls, value: "str | ThreatModel") -> "ThreatModel":
        if isinstance(value, ThreatModel):
            return value
        key = str(value).strip().lower().replace("_", "-")
        if key in _ALIASES:
            return _ALIASES[key]
        from ..registry import UnknownNameError

        raise UnknownNameError(f"unknown threat model {value!r}; known: gray-box (oblivious), black-box "
                               "(transfer), adaptive (white-box)")


_DESCRIPTIONS = {
    ThreatModel.GRAY_BOX: "oblivious: attacks made against the base network without the defense",
    ThreatModel.BLACK_BOX: "transfer: attacks made against an independently trained surrogate model",
    ThreatModel.WHITE_BOX_ADAPTIVE: "adaptive white-box: attacks made against the whole defense, EOT over its "
                                    "randomness, BPDA through non-differentiable steps",
}

_ALIASES = {
    "gray-box": ThreatModel.GRAY_BOX, "grey-box": ThreatModel.GRAY_BOX, "graybox": ThreatModel.GRAY_BOX,
    "greybox": ThreatModel.GRAY_BOX, "oblivious": ThreatModel.GRAY_BOX,
    "black-box": ThreatModel.BLACK_BOX, "blackbox": ThreatModel.BLACK_BOX, "transfer": ThreatModel.BLACK_BOX,
    "adaptive": ThreatModel.WHITE_BOX_ADAPTIVE, "white-box": ThreatModel.WHITE_BOX_ADAPTIVE,
    "whitebox": ThreatModel.WHITE_BOX_ADAPTIVE, "white-box-adaptive": ThreatModel.WHITE_BOX_ADAPTIVE,
}


def parse_threats(value: "str | ThreatModel | Iterable[str | ThreatModel]") -> list[ThreatModel]:
    """``"gray-box,adaptive"`` or a list -> ``[ThreatModel.GRAY_BOX, ThreatModel.WHITE_BOX_ADAPTIVE]``."""
    items = value.split(",") if isinstance(value, str) else ([value] if isinstance(value, ThreatModel) else list(value))
    out: list[ThreatModel] = []
    for v in items:
        if isinstance(v, str) and not v.strip():
            continue
        t = ThreatModel.parse(v)
        if t not in out:
            out.append(t)
    if not out:
        raise ValueError("no threat model given")
    return out


def samples_per_gradient(defense: nn.Module, eot_samples: int) -> int:
    """Random samples averaged per gradient of the adaptive target: the harness's EOT samples times
    the defense's own averaging (``n_grad`` of a MAD classifier's forward)."""
    if not getattr(defense, "randomized", False):
        return 1
    return int(eot_samples) * int(getattr(defense, "n_grad", 1) or 1)


def make_target(defense: nn.Module, threat: ThreatModel, *, surrogate: nn.Module | None = None,
                eot_samples: int = 1, eot_reduction: str = "logprob") -> tuple[nn.Module, dict[str, Any]]:
    """The model an attack differentiates under ``threat``, and a description of it.

    gray-box: ``defense.base``; black-box: ``surrogate``; adaptive: the defense's forward (or its
    ``bpda_model()`` if it defines one, for defenses with non-differentiable steps), wrapped in
    :class:`~maskdefense.attacks.EOT` with ``eot_samples`` when the defense is randomized and
    ``eot_samples > 1``.
    """
    threat = ThreatModel.parse(threat)
    if threat is ThreatModel.GRAY_BOX:
        base = getattr(defense, "base", defense)
        return base, {"threat": threat.value, "target": "base model (no defense)", "samples_per_gradient": 1,
                      "eot_samples": 1, "bpda": None}
    if threat is ThreatModel.BLACK_BOX:
        if surrogate is None:
            raise ValueError("the black-box threat model needs a surrogate model (independently trained)")
        return surrogate, {"threat": threat.value, "target": "surrogate model", "samples_per_gradient": 1,
                           "eot_samples": 1, "bpda": None}
    target: nn.Module = defense
    bpda = None
    if callable(getattr(defense, "bpda_model", None)):
        target = defense.bpda_model()  # type: ignore[operator]
        bpda = "defense.bpda_model()"
    randomized = bool(getattr(defense, "randomized", False))
    if randomized and eot_samples > 1:
        target = EOT(target, eot_samples, eot_reduction).eval()
    return target, {
        "threat": threat.value, "target": "defense end to end", "eot_samples": int(eot_samples) if randomized else 1,
        "eot_reduction": eot_reduction, "defense_samples_per_forward": int(getattr(defense, "n_grad", 1) or 1),
        "samples_per_gradient": samples_per_gradient(defense, eot_samples), "bpda": bpda,
        "non_differentiable": bool(getattr(defense, "non_differentiable", False)),
    }
